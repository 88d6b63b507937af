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


def add_device(p: argparse.ArgumentParser, what: str = "models run", default: str | None = "auto",
               default_text: str = "auto") -> None:
    p.add_argument("--device", default=default, type=_device,
                   help=f"where {what}: auto (CUDA if present), cpu or cuda[:N] (default {default_text})")


def resolve_device_flag(name: str) -> str:
    """``--device``'s value as a torch device name (``auto`` resolved), or a one-line error naming the flag."""
    import torch

    from ..errors import PrivsplitError

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PrivsplitError(f"--device {name}: CUDA is not available here; use --device cpu (or auto)")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise PrivsplitError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                                 f"numbered from 0")
    return name


def add_threads(p: argparse.ArgumentParser, what: str = "torch CPU threads", default_text: str = "torch's") -> None:
    p.add_argument("--threads", type=flag(int, ge=1), metavar="N",
                   help=f"{what} (default: {default_text}); on a machine other jobs share, give the cores "
                   "you may use: more threads than free cores is slower, not faster")


def add_json(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true",
                   help=f"print {what} as one JSON object on stdout (strict JSON: no NaN or Infinity) and "
                   "nothing else there; the lines for people go to stderr")


def _device(text: str) -> str:
    import re

    if not re.fullmatch(r"auto|cpu|cuda(:\d{1,2})?", text):
        raise argparse.ArgumentTypeError(f"must be auto, cpu or cuda[:N], got {text!r}")
    return text


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
