"""``privsplit evaluate`` and ``privsplit attack`` (the work is in
:mod:`privsplit.evaluate`, imported only when a command runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..checks import flag
from ..errors import CheckpointError
from .common import add_device, add_json, add_lpips, add_progress, add_threads, set_threads

EXAMPLES_EVALUATE = """\
examples:
  privsplit evaluate runs/digits-ours-rn18_3-20260101-120000
  privsplit evaluate runs/cifar-a runs/cifar-b --out results/cifar      # one comparison table + scatter plot
  privsplit evaluate runs/                                             # every run in a folder
  privsplit evaluate RUN --data-root /data/cifar10 --attack-epochs 30 --lpips-weights lpips_alex.safetensors
  privsplit evaluate RUN --set data.limit_train=2000 --set data.limit_test=500 --attack-epochs 3   # a quick look
  privsplit evaluate RUN --attacks attribute,reconstruction,inversion,model_space --set data.limit_test=200

The obfuscator is frozen and run as deployed (random ops on). The server sees every z a
client sends and owns a copy of the obfuscator, so the attackers here do too:
  - repeated queries: each attack runs on z averaged over k draws for every image
    (--queries, default 1,16,inf; inf = the noise-free limit); the headline privacy
    is the one-query figure, the best attacker over families at each k is reported,
    and the verdict (leaks / at chance) is the worst over the k measured;
  - fresh draws: parametric attackers see new randomness on the training images every
    epoch (--no-fresh-draws reuses one draw);
  - families: head (the server's network), mlp (pooled z), knn (non-parametric),
    linear (a linear probe on standardised, unpooled z), mlp_flat (an MLP on unpooled z).
  - image reconstruction: a learned decoder (reconstruction), the white-box inversion
    (inversion: optimises each image until the client's noise-free output matches z
    averaged over k queries, with a total-variation prior) and, for a client the attacker
    does not own, the model-space attack (model_space: a fresh surrogate client of the same
    architecture optimised with the images); the reconstruction privacy is the worst case
    over those run, per metric and k, with the attacker named.
Writes results.json, report.md, training_curves.png and reconstruction.png to
--out (default RUN_DIR/eval/); several runs add comparison.md and privacy_utility.png.
A model whose utility is not above its chance level has not learned its task: its
delta is flagged (results.json task_learned: false), since it means nothing.
--json prints the results on stdout for scripts (the lines for people go to stderr).
LPIPS needs ImageNet AlexNet weights (nothing is downloaded): --lpips-weights FILE or
$PRIVSPLIT_LPIPS_WEIGHTS; without them LPIPS is reported as unavailable.
"""


def _common_args(p: argparse.ArgumentParser, default_out: str = "RUN_DIR/eval/") -> None:
    p.add_argument("--out", metavar="DIR", help=f"where to write results (default: {default_out})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="data.KEY=VALUE",
                   help="change a data setting of the run's config, e.g. --set data.limit_train=2000 (repeatable)")
    p.add_argument("--data-root", metavar="DIR", help="the data set's folder (same as --set data.root=DIR)")
    p.add_argument("--attack-epochs", type=flag(int, ge=1), default=10, metavar="N", help="attacker training epochs (default 10)")
    p.add_argument("--attack-batch-size", type=flag(int, ge=2), default=128, metavar="N", help="attacker batch size (default 128)")
    p.add_argument("--attack-lr", type=flag(float, gt=0), default=1e-3, metavar="LR", help="attacker Adam learning rate (default 1e-3)")
    p.add_argument("--families", default="head,mlp,knn,linear,mlp_flat", metavar="LIST",
                   help="attribute attacker families, comma-separated: head (the server's network), mlp (pooled z), "
                   "knn, linear (a linear probe on standardised unpooled z), mlp_flat (an MLP on unpooled z); "
                   "default all five: privacy is the worst case over them")
    p.add_argument("--queries", default="1,16,inf", metavar="LIST",
                   help="numbers of repeated queries of each image to attack at, comma-separated whole numbers "
                   "and inf (noise-free limit); 1 is always included (default 1,16,inf)")
    p.add_argument("--no-fresh-draws", action="store_true",
                   help="train attackers on one fixed draw of z instead of fresh obfuscator randomness every epoch "
                   "(a weaker attacker: only for comparison)")
    p.add_argument("--consistent-randomness", action="store_true",
                   help="evaluate the client as deployed with a device key (privsplit infer --device-key): a "
                   "repeated query of an image sends the same z")
    p.add_argument("--attack-augment", action="store_true",
                   help="mirror spatial z left-right at random while training attribute attackers")
    p.add_argument("--inversion-steps", type=int, default=400, metavar="N",
                   help="inversion / model_space attacks: most Adam steps per batch of test images; a batch stops "
                   "earlier when its objective stops falling (default 400)")
    p.add_argument("--inversion-lr", type=float, default=0.1, metavar="LR",
                   help="inversion / model_space attacks: Adam learning rate on pixels in [0, 1] (default 0.1)")
    p.add_argument("--inversion-tv", type=float, default=1.0, metavar="W",
                   help="inversion / model_space attacks: weight of the total-variation image prior, 0 for none "
                   "(default 1, chosen on CIFAR-10 no_noise validation images)")
    p.add_argument("--target", default="private", help="label the attribute attack predicts (default private)")
    p.add_argument("--seed", type=flag(int, ge=0), default=0, help="seed of the obfuscator's random ops and the attackers (default 0)")
    add_lpips(p)
    p.add_argument("--latency-repeats", type=flag(int, ge=0), default=20, metavar="N",
                   help="batch-1 CPU forward passes timed for the latency (0: skip; default 20)")
    p.add_argument("--latency-threads", type=flag(int, ge=1), default=1, metavar="N",
                   help="torch threads while timing the latency (default 1: one core of an edge device)")
    add_threads(p, "torch CPU threads for computing z and training attackers")
    add_device(p, "z is computed and attackers train")
    add_progress(p, "no progress bars or progress lines (without a terminal, a long stage prints one line every "
                 "few seconds with its rate and ETA)")


def _options(args: argparse.Namespace, attacks: list[str]):  # noqa: ANN202
    from ..attacks import AttackOptions, parse_queries
    from ..evaluate import EvalOptions, check_attacks

    overrides = list(args.overrides) + ([f"data.root={args.data_root}"] if args.data_root else [])
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    attack = AttackOptions(epochs=args.attack_epochs, batch_size=args.attack_batch_size, lr=args.attack_lr,
                           seed=args.seed, families=families, target=args.target,
                           augment=args.attack_augment, queries=parse_queries(args.queries),
                           fresh_draws=not args.no_fresh_draws, inversion_steps=args.inversion_steps,
                           inversion_lr=args.inversion_lr, inversion_tv=args.inversion_tv)
    return EvalOptions(
        attacks=check_attacks(attacks, attack),
        overrides=overrides,
        attack=attack,
        seed=args.seed,
        consistent=args.consistent_randomness,
        lpips_weights=args.lpips_weights,
        latency_repeats=args.latency_repeats,
        latency_threads=args.latency_threads,
        device=args.device,
        progress=False if args.no_progress else None,
    )


def _quiet_stdout(args: argparse.Namespace):  # noqa: ANN202
    """With --json, everything for people goes to stderr and stdout holds only the JSON."""
    import contextlib
    import sys

    return contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()


def _print_json(data: object) -> None:
    from ..report import to_json

    print(to_json(data))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .. import report
    from ..evaluate import evaluate_runs

    set_threads(args.threads)
    for run in map(Path, args.runs):  # say what a wrong path is, not only that it is no run
        if run.exists() and not run.is_dir():
            raise CheckpointError(f"{run} is a file, not a run folder: give the folder that privsplit train wrote")
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    with _quiet_stdout(args):
        results = evaluate_runs(args.runs, _options(args, attacks), args.out)
        for r in results:
            print("\n".join(report.summary_lines(r)))
        if len(results) > 1:
            print("\n" + report.comparison_markdown(results))
    if args.json:
        _print_json({"runs": results})
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from .. import report
    from ..evaluate import evaluate_run
    from ..rundir import RunDir

    set_threads(args.threads)
    options = _options(args, [args.attack])
    out = Path(args.out) if args.out else RunDir(args.run).attack_dir(args.attack)
    with _quiet_stdout(args):
        r = evaluate_run(args.run, options, out)
        print("\n".join(report.summary_lines(r)))
        print(f"  written to {out}")
    if args.json:
        _print_json(r)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` and ``attack`` to the CLI's subparsers."""
    p = sub.add_parser(
        "evaluate",
        help="measure trained runs: utility, attribute and reconstruction attacks, client cost",
        description="Measure finished runs: task accuracy, attackers trained after training on z, client cost; "
        "writes results.json, report.md and plots.",
        epilog=EXAMPLES_EVALUATE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folder(s), or a folder holding run folders")
    p.add_argument("--attacks", default="attribute,reconstruction", metavar="LIST",
                   help="attacks to run, comma-separated: attribute, reconstruction, inversion, model_space "
                   "(default attribute,reconstruction)")
    _common_args(p)
    add_json(p, 'the results ({"runs": [...]}, one entry per run, each what its results.json holds)')
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "attack",
        help="run one attack on a trained run",
        description="Train one attack on z of a finished run and report it (default output RUN_DIR/eval/attack-NAME/).",
    )
    p.add_argument("run", metavar="RUN_DIR", help="a finished run folder")
    p.add_argument("--attack", required=True, metavar="NAME",
                   help="attribute, reconstruction, inversion or model_space")
    _common_args(p, "RUN_DIR/eval/attack-NAME/")
    add_json(p, "the results (what results.json holds)")
    p.set_defaults(func=cmd_attack)
