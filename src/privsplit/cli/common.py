"""Arguments and helpers every command shares: defined once, used by each command's module."""

from __future__ import annotations

import argparse

from ..checks import flag


def add_config_args(p: argparse.ArgumentParser) -> None:
    """``--config`` and repeatable ``--set KEY=VALUE``."""
    p.add_argument("--config", metavar="FILE.yaml",
                   help="experiment config: a file, or the name of a shipped one (privsplit info --configs); "
                   "default: the built-in digits default")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set train.epochs=5 --set data.root=/data (repeatable)",
    )


def add_device(p: argparse.ArgumentParser, what: str = "models run") -> None:
    p.add_argument("--device", default="auto", help=f"where {what}: auto (CUDA if present), cpu or cuda[:N] (default auto)")


def add_threads(p: argparse.ArgumentParser, what: str = "torch CPU threads") -> None:
    p.add_argument("--threads", type=flag(int, ge=1), help=f"{what} (default: torch's)")


def add_progress(p: argparse.ArgumentParser, what: str = "no progress bars") -> None:
    p.add_argument("--no-progress", action="store_true", help=what)


def add_lpips(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lpips-weights", metavar="FILE",
                   help="LPIPS(alex) weights: the LPIPS state dict or torchvision's ImageNet AlexNet "
                   "(default $PRIVSPLIT_LPIPS_WEIGHTS; none: LPIPS unavailable)")


def set_threads(n: int | None) -> None:
    """Use ``n`` torch CPU threads (None: leave torch's default)."""
    if n:
        import torch

        torch.set_num_threads(n)


def chain_text(chain: list[dict]) -> str:
    """A reduction chain in one line: ``noise(sigma=4.0) -> shuffle(fraction=0.5)``."""
    if not chain:
        return "none"
    return " -> ".join(f"{s['op']}(" + ", ".join(f"{k}={v}" for k, v in s.items() if k != "op") + ")" for s in chain)
