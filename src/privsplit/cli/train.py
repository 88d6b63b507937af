"""``privsplit train``: train an obfuscator and task network into a run folder."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from ..errors import PrivsplitError
from .common import add_config_args, add_progress, chain_text

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


def cmd_train(args: argparse.Namespace) -> int:
    from ..config import apply_overrides, load_config
    from ..train.engine import train

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
    from ..evaluate import quick_privacy

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
          f"reduction {chain_text(cfg.reduction)}, {metrics.get('epoch', cfg.train.epochs)} epoch(s)")
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



def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train an obfuscator and task network into a run folder",
        description="Train an obfuscator (client) and task head(s) (server), optionally against proxy adversaries.",
        epilog=EXAMPLES_TRAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("--out", metavar="DIR", help="run folder to create (default: runs/<dataset>-<method>-<split>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last complete checkpoint")
    add_progress(p, "no progress bar (per-epoch lines are still printed)")
    p.add_argument("--no-privacy-check", action="store_true",
                   help="skip the quick attack at the end (an MLP and a k-NN attacker at 1 and 16 queries, on at "
                   "most 2000 images; seconds)")
    p.set_defaults(func=cmd_train)
