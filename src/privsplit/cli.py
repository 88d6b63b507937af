"""Command line: ``privsplit train | info | evaluate | attack | serve | infer | keygen | export | benchmark``.

Errors in the user's input print one line and exit with status 2, never a
stack trace.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .checks import flag
from .errors import PrivsplitError

EXAMPLES_TRAIN = """\
examples:
  privsplit train                                   # built-in default: 8x8 digits, offline, ~1 min
  privsplit train --config cifar10_rn18_3 --set data.root=/data/cifar10   # a shipped config (privsplit info --configs)
  privsplit train --set reduction='[{op: noise, sigma: 8}, {op: shuffle, fraction: 0.5}]'
  privsplit train --set adversaries='[{name: attr, kind: attribute, target: private}]' --set train.lam=0.01
  privsplit train --resume runs/digits-ours-rn18_3-20260101-120000 --set train.epochs=20
  torchrun --nproc-per-node 2 -m privsplit train --out runs/ddp     # several processes

Every setting (see `privsplit info --config`) can be changed with --set key=value;
values are YAML, list items are addressed by index (reduction.0.sigma=8).
A run folder holds config.yaml, metrics.jsonl (one line per epoch), checkpoints/
(safetensors, one per epoch), and when finished: obfuscator.safetensors (the client
part), heads.safetensors (the server part) and run.json.
"""


def _add_config_args(p: argparse.ArgumentParser) -> None:
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


def cmd_train(args: argparse.Namespace) -> int:
    from .config import apply_overrides, load_config
    from .train.engine import train

    if args.resume:
        run_dir = Path(args.resume)
        if args.config:
            raise PrivsplitError("--resume reads the config saved in the run folder; do not also give --config")
        if not (run_dir / "config.yaml").is_file():
            raise PrivsplitError(f"{run_dir} is not a privsplit run folder (no config.yaml); nothing to resume")
        # The engine refuses overrides that would change the experiment.
        cfg = apply_overrides(load_config(run_dir / "config.yaml"), args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
        if args.out:
            run_dir = Path(args.out)
        elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise PrivsplitError("under torchrun give --out DIR, so every process writes the same run folder")
        else:
            name = cfg.name or f"{cfg.data.name}-{cfg.method}-{cfg.model.split}"
            run_dir = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    metrics = train(cfg, run_dir, resume=bool(args.resume), progress=False if args.no_progress else None)
    if int(os.environ.get("RANK", "0")) == 0:
        _print_result(cfg, run_dir, metrics)
        if not args.no_privacy_check:
            _print_quick_privacy(run_dir)
    return 0


def _print_quick_privacy(run_dir: Path) -> None:
    from .evaluate import quick_privacy

    t0 = time.time()
    r = quick_privacy(run_dir)
    by = r["privacy_by_queries"]
    shown = ", ".join(f"{100 * v:.2f}% at {q} quer{'y' if q == '1' else 'ies'}" for q, v in by.items())
    print(f"  privacy (quick check): best attacker on the private label {shown}  (chance {100 * r['chance']:.2f}%)")
    print(f"    mlp + k-NN attackers owning the obfuscator, {r['epochs']} epochs, {r['n_train']} train / {r['n_test']} test "
          f"images, {time.time() - t0:.0f}s; 16 queries = the server averages 16 sends of each image. "
          f"For the full measurement: privsplit evaluate {run_dir}")


def _print_result(cfg, run_dir: Path, metrics: dict) -> None:  # noqa: ANN001
    import json

    run = json.loads((run_dir / "run.json").read_text())
    chance = run["chance"]
    print(f"\nfinished: {cfg.method} on {cfg.data.name}, {cfg.model.backbone} split {cfg.model.split}, "
          f"reduction {_chain_text(cfg.reduction)}, {metrics.get('epoch', cfg.train.epochs)} epoch(s)")
    for h in cfg.heads:
        acc = metrics.get(f"test/{h.name}/acc")
        if acc is not None:
            print(f"  {h.name} ({h.target}) test accuracy: {100 * acc:.2f}%  (chance {100 * chance[h.target]:.2f}%)")
    # Adversaries as trained (a method may add its own), read from the metrics.
    for key, v in metrics.items():
        if key.startswith("test/adv/"):
            name, kind = key[len("test/adv/"):].rsplit("/", 1)
            shown = f"{100 * v:.2f}%" if kind == "acc" else f"{v:.4f}"
            print(f"  proxy adversary {name} test {kind}: {shown}")
    print(f"  z shape {tuple(run['z_shape'])}; run folder: {run_dir}")
    if any(k.startswith("test/adv/") for k in metrics):
        print("  the proxy adversary is no privacy measure: fresh attackers trained on z measure leakage")


def _chain_text(chain: list[dict]) -> str:
    if not chain:
        return "none"
    return " -> ".join(f"{s['op']}(" + ", ".join(f"{k}={v}" for k, v in s.items() if k != "op") + ")" for s in chain)


def cmd_info(args: argparse.Namespace) -> int:
    from .config import load_config
    from .data import DATASETS
    from .data.base import TaskInfo
    from .methods import METHODS, build_method
    from .models.backbones import BACKBONES, output_shape, split_points
    from .reduction import OPS

    if args.configs:
        return _list_configs()
    cfg = load_config(args.config, args.overrides)
    METHODS.get(cfg.method)
    if args.show_config:
        print(cfg.to_yaml(), end="")
        return 0
    print("backbones and split points:")
    for b in BACKBONES.names():
        print(f"  {b}: {', '.join(split_points(b))}")
    print(f"reduction ops: {', '.join(OPS.names())}")
    print(f"datasets: {', '.join(DATASETS.names())}")
    print(f"methods: {', '.join(METHODS.names())}")
    import math

    import torch

    size = args.image_size or cfg.data.image_size or DATASETS.create(cfg.data.name).default_size
    image = (3, size, size)
    info = TaskInfo(cfg.data.name, DATASETS.create(cfg.data.name).labels, image)
    # Built on the meta device: shapes only, no weights, no data.
    with torch.device("meta"):
        model = build_method(cfg).build(info)
    z = output_shape(model.obfuscator, image)
    print(f"\nthis config: {cfg.method}, {cfg.model.backbone} split {cfg.model.split} on {size}x{size} images")
    if cfg.reduction:
        print(f"  encoder output {model.obfuscator.encoded_shape}; after reduction {_chain_text(cfg.reduction)}: z {z}")
    print(f"  z has {math.prod(z)} values, {math.prod(z) / math.prod(image):.3f}x the {math.prod(image)} of the image")
    return 0


def _list_configs() -> int:
    from .config import shipped_configs

    folder = shipped_configs()
    print(f"configs shipped with privsplit ({folder}); use one with --config NAME:")
    for path in sorted(folder.glob("*.yaml")):
        about = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        print(f"  {path.stem:28s} {about[:90]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privsplit",
        description="Privacy-preserving split inference: train an obfuscator that runs on the client and a task "
        "network that runs on the server; only the anonymised representation z leaves the client.",
        epilog="Run `privsplit COMMAND --help` for each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"privsplit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train an obfuscator and task network into a run folder",
        description="Train an obfuscator (client) and task head(s) (server), optionally against proxy adversaries.",
        epilog=EXAMPLES_TRAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_args(p)
    p.add_argument("--out", metavar="DIR", help="run folder to create (default: runs/<dataset>-<method>-<split>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last complete checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (per-epoch lines are still printed)")
    p.add_argument("--no-privacy-check", action="store_true",
                   help="skip the quick attack at the end (an MLP and a k-NN attacker at 1 and 16 queries, on at "
                   "most 2000 images; seconds)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "info",
        help="list backbones, split points, ops, datasets; show the shape of z for a config",
        description="List what can be configured, and the shape of z for a config without training.",
    )
    _add_config_args(p)
    p.add_argument("--image-size", type=flag(int, ge=8, le=1024), help="input image side (default: the config's or the dataset's)")
    p.add_argument("--show-config", action="store_true", help="print the fully resolved config as YAML and exit")
    p.add_argument("--configs", action="store_true", help="list the configs shipped with privsplit (the paper's settings)")
    p.set_defaults(func=cmd_info)

    # Each command's body lives in its own module, imported here.
    from .benchmark import add_parser as add_benchmark
    from .evaluate_cli import add_commands as add_evaluate
    from .export import add_parser as add_export
    from .serve.client import add_keygen_parser as add_keygen
    from .serve.client import add_parser as add_infer
    from .serve.server import add_parser as add_serve

    for register in (add_evaluate, add_serve, add_infer, add_keygen, add_export, add_benchmark):
        register(sub)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except PrivsplitError as e:
        print(f"privsplit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nprivsplit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (privsplit info | head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
