"""``privsplit tune``: search settings for the privacy-utility frontier (the work is in
:mod:`privsplit.tune`, imported only when the command runs: optuna and torch stay out of --help)."""

from __future__ import annotations

import argparse

from ..checks import flag
from .common import add_config_args, add_device, add_progress, add_threads, set_threads

EXAMPLES_TUNE = """\
examples:
  privsplit tune --space space.yaml --trials 3 --set train.epochs=2 --out tune     # the built-in digits
  privsplit tune --config cifar10_rn18_3_robust --set data.root=/data/cifar10 --space space.yaml \\
      --trials 20 --target "privacy@16<=0.25" --reference cifar10_rn18_4_robust --confirm

space.yaml names dotted config settings, each a range or a list of choices:
  reduction.0.sigma: {low: 1, high: 16, log: true}
  train.lam: {low: 0.01, high: 1, log: true}
  adversaries.0.queries: [16, inf]

Each trial trains on the training split less --val-fraction of it and is attacked on that
validation share (the test split is not read); utility is the task head's accuracy there,
privacy@K the best attacker's accuracy on the private label at K repeated queries. The
result for --target is the feasible trial with the best utility, written to OUT/best.yaml
(privsplit train --config OUT/best.yaml); OUT/report.md holds the frontier table and plot.

Each finished epoch of a trial prints a line, each finished trial one more (its settings
and objectives, or why it failed or was pruned). A trial whose validation utility after
an epoch is more than --prune-margin below the best finished trial's there is stopped and
recorded as pruned (--no-prune: never); a trial whose loss diverges is recorded as failed
with its reason; the study goes on.

The study lives in --storage (default OUT/study.journal): rerun the same command to
continue a stopped study. To scale out, run the same command in several processes or on
several machines against one database, e.g. --storage postgresql://user@db/privsplit (or
a journal file on a shared disk); together they run --trials trials.
"""


def cmd_tune(args: argparse.Namespace) -> int:
    from ..tune import TuneOptions, load_space, tune

    set_threads(args.threads)
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    options = TuneOptions(space=load_space(args.space), config=args.config, overrides=args.overrides,
                          objectives=args.objectives, targets=args.target, n_trials=args.trials, out=args.out,
                          storage=args.storage, study_name=args.study_name, val_fraction=args.val_fraction,
                          attack_epochs=args.attack_epochs, families=families, device=args.device or "cpu",
                          confirm=args.confirm, progress=False if args.no_progress else None, seed=args.seed,
                          prune_margin=None if args.no_prune else args.prune_margin, references=args.reference)
    result = tune(options)
    if result["best"] is None and args.target:
        import sys

        print(f"no trial meets {', '.join(args.target)}; the closest:", file=sys.stderr)
        for c in result.get("closest", []):
            print(f"  trial {c['number']}: {c['params']}: "
                  + ", ".join(f"{k} {100 * v:.1f}%" for k, v in c["values"].items()), file=sys.stderr)
        return 1
    if result["best"] is not None:
        print(f"best: trial {result['best']['number']} -> {args.out}/best.yaml; report {args.out}/report.md")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="search settings for the privacy-utility frontier and a config meeting a target",
                       description="Search config settings with Optuna (multi-objective), each trial trained and "
                       "attacked on a validation split carved from the training images.",
                       epilog=EXAMPLES_TUNE, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--space", required=True, metavar="FILE.yaml", help="the search space (see below)")
    p.add_argument("--objectives", default="utility,privacy@16,privacy@inf", metavar="LIST",
                   help="utility and privacy@K (K repeated queries, or inf), comma-separated "
                   "(default utility,privacy@16,privacy@inf)")
    p.add_argument("--target", action="append", default=[], metavar="EXPR",
                   help='a constraint such as "privacy@16<=0.25" or "utility>=0.8" (repeatable)')
    p.add_argument("--trials", type=flag(int, ge=1), default=20, metavar="N",
                   help="trials in the study in total, over every process sharing it (default 20)")
    p.add_argument("--out", default="tune", metavar="DIR", help="trials, best.yaml and report.md (default tune/)")
    p.add_argument("--storage", metavar="URL_OR_FILE",
                   help="Optuna storage: a journal file (default OUT/study.journal) or a database URL "
                   "(sqlite:///tune.db, postgresql://...)")
    p.add_argument("--study-name", default="privsplit", metavar="NAME", help="the study in the storage (default privsplit)")
    p.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                   help="share of the training images held out for validation (default 0.2)")
    p.add_argument("--attack-epochs", type=flag(int, ge=1), default=3, metavar="N", help="attacker epochs (default 3)")
    p.add_argument("--families", default="mlp,linear", metavar="LIST",
                   help="attacker families (default mlp,linear: quick; head,mlp,knn,linear,mlp_flat for all)")
    p.add_argument("--prune-margin", type=flag(float, ge=0, le=1), default=0.25, metavar="F",
                   help="stop a trial whose validation utility after an epoch is more than F below the best "
                   "finished trial's after that epoch (default 0.25, i.e. 25 points)")
    p.add_argument("--no-prune", action="store_true", help="run every trial to its last epoch")
    p.add_argument("--seed", type=flag(int, ge=0), default=0, help="attackers' seed (default 0)")
    p.add_argument("--reference", action="append", default=[], metavar="CONFIG",
                   help="a config to measure beside the study at its budget (its own settings, the study's --set "
                   "overrides on top), e.g. a shipped config; shown in the report and the plot with the Pareto "
                   "trials that match it (repeatable; measured once, after the trials)")
    p.add_argument("--confirm", action="store_true",
                   help="retrain the chosen config on the whole training split and evaluate it once on the test split")
    add_threads(p)
    add_device(p, "trials train and attack", default=None, default_text="cpu")
    add_progress(p, "no progress bar or progress lines within an epoch (the lines per epoch and per trial are "
                 "still printed)")
    p.set_defaults(func=cmd_tune)
