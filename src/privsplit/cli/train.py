"""``privsplit train``: train an obfuscator and task network into a run folder."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import PrivsplitError
from ..rundir import RunDir
from .common import add_config_args, add_device, add_json, add_progress, add_threads, chain_text

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
(safetensors, one written per epoch; only the newest train.keep_checkpoints, default 2,
are kept), and when finished: obfuscator.safetensors (the client part),
heads.safetensors (the server part) and run.json (with the quick privacy check).

The quick privacy check at the end is a lower bound: the fast attacker families (not the
server's network, head) on at most 2000 training images, at 1 and 16 queries. The figure
that counts is privsplit evaluate's (every family, the noise-free limit, every image):
each quick attacker is one of evaluate's, so on the same images evaluate finds as much
or more. It takes seconds at 32 px but minutes on large images: 265 s for
1,000 / 300 faces at 178 px on one CPU thread (about twice that at its 2000 / 1000
cap); --no-privacy-check skips it.

Without a terminal (a log file, a pipe) progress is one line every few seconds with
its rate and ETA; --no-progress silences it. On a machine other jobs share, give
--threads the number of cores free for this run.
"""


def cmd_train(args: argparse.Namespace) -> int:
    if not args.json:
        _train(args)
        return 0
    import contextlib
    import sys

    real_stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # the lines for people go to stderr
        record = _train(args, collect=True)
    if record is not None:
        from ..report import to_json

        print(to_json(record), file=real_stdout)
    return 0


def _train(args: argparse.Namespace, collect: bool = False):  # noqa: ANN202
    from ..config import apply_overrides, load_config
    from ..train.engine import train

    # --device / --threads are the settings train.device / train.threads (both may change on --resume).
    flags = [f"train.{k}={v}" for k, v in (("device", args.device), ("threads", args.threads)) if v is not None]
    if args.resume:
        run_dir = Path(args.resume)
        if args.config:
            raise PrivsplitError("--resume reads the config saved in the run folder; do not also give --config")
        if not RunDir(run_dir).is_run():
            raise PrivsplitError(f"{run_dir} is not a privsplit run folder (no config.yaml); nothing to resume")
        # The engine refuses overrides that would change the experiment.
        cfg = apply_overrides(load_config(RunDir(run_dir).config), [*args.overrides, *flags])
    else:
        cfg = load_config(args.config, [*args.overrides, *flags])
        if args.out:
            run_dir = Path(args.out)
        elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise PrivsplitError("under torchrun give --out DIR, so every process writes the same run folder")
        else:
            name = cfg.name or f"{cfg.data.name}-{cfg.method}-{cfg.model.split}"
            run_dir = RunDir.new(name).path
    from ..loggers import CSVLogger, TensorBoardLogger

    callbacks = []
    if args.log_csv is not None:
        callbacks.append(CSVLogger(args.log_csv or None))
    if args.tensorboard is not None:  # a one-line ConfigError where tensorboard is not installed
        callbacks.append(TensorBoardLogger(args.tensorboard or None, steps=True))
    metrics = train(cfg, run_dir, resume=bool(args.resume), progress=False if args.no_progress else None,
                    callbacks=callbacks)
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    _print_result(cfg, run_dir, metrics)
    if not args.no_privacy_check:
        _print_quick_privacy(run_dir, cfg.train.device, progress=False if args.no_progress else None)
    if collect:
        return {"run_dir": str(run_dir), **RunDir(run_dir).read_record()}
    return None


def _print_quick_privacy(run_dir: Path, device: str = "cpu", progress: bool | None = None) -> None:
    from ..evaluate import quick_privacy, save_quick_privacy

    r = quick_privacy(run_dir, device=device, progress=progress)
    save_quick_privacy(run_dir, r)
    by = r["privacy_by_queries"]
    shown = ", ".join(f"{100 * v:.2f}% at {q} quer{'y' if q == '1' else 'ies'}" for q, v in by.items())
    print(f"  privacy (quick check, a lower bound): best attacker on the private label {shown}  "
          f"(chance {100 * r['chance']:.2f}%)")
    print(f"    {r['attackers_text']}, {r['epochs']} epochs, {r['n_train']} train / {r['n_test']} test images, "
          f"{r['wall_s']:.0f}s; k queries = the server averages k sends of each image. Stronger attackers find "
          f"more: privsplit evaluate {run_dir}")


def _print_result(cfg, run_dir: Path, metrics: dict) -> None:  # noqa: ANN001
    run = RunDir(run_dir).read_record()
    chance = run["chance"]
    print(f"\nfinished: {cfg.method} on {cfg.data.name}, {cfg.model.backbone} split {cfg.model.split}, "
          f"reduction {chain_text(cfg.reduction)}, {metrics.get('epoch', cfg.train.epochs)} epoch(s)")
    for h in cfg.heads:
        acc = metrics.get(f"test/{h.name}/acc")
        if acc is not None:
            learned = _learned(acc, chance[h.target], run.get("n_test"))
            print(f"  {h.name} ({h.target}) test accuracy: {100 * acc:.2f}%  (chance {100 * chance[h.target]:.2f}%)"
                  + ("" if learned else "  -- NOT LEARNED: not above chance; privacy figures of a model that has not "
                     "learned its task mean nothing"))
    # Adversaries as trained (a method may add its own), read from the metrics.
    for key, v in metrics.items():
        if key.startswith("test/adv/"):
            name, kind = key[len("test/adv/"):].rsplit("/", 1)
            shown = f"{100 * v:.2f}%" if kind == "acc" else f"{v:.4f}"
            print(f"  proxy adversary {name} test {kind}: {shown}")
    print(f"  z shape {tuple(run['z_shape'])}; run folder: {run_dir}")
    if any(k.startswith("test/adv/") for k in metrics):
        print("  the proxy adversary is no privacy measure: fresh attackers trained on z measure leakage")



def _learned(acc: float, chance: float, n: int | None) -> bool:
    from ..evaluate import task_learned

    return task_learned(acc, chance, n) if n else acc > chance


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
    add_device(p, "the models train (train.device)", default=None, default_text="the config's train.device, auto")
    add_threads(p, "torch CPU threads (train.threads)", default_text="the config's train.threads, else torch's: one "
                "per core")
    add_progress(p, "no progress bar or progress lines (per-epoch lines are still printed)")
    p.add_argument("--log-csv", nargs="?", const="", metavar="FILE",
                   help="write the training curves (one row per epoch, every metric) to FILE, default "
                   "RUN_DIR/metrics.csv")
    p.add_argument("--tensorboard", nargs="?", const="", metavar="DIR",
                   help="write TensorBoard curves (every epoch's metrics, every batch's losses) to DIR, default "
                   "RUN_DIR/tensorboard; needs pip install tensorboard")
    p.add_argument("--no-privacy-check", action="store_true",
                   help="skip the quick privacy check at the end (fast attackers at 1 and 16 queries on at most "
                   "2000 images, saved in run.json as quick_privacy; a lower bound on what privsplit evaluate "
                   "finds; seconds at 32 px, minutes at 178 px)")
    add_json(p, "the finished run (its run.json with the quick privacy check, and run_dir)")
    p.set_defaults(func=cmd_train)
