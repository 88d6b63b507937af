"""``privsplit benchmark`` (the work is in :mod:`privsplit.benchmark`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_device, add_lpips, add_progress, add_threads, set_threads

# The budgets, method names and configs folder come from privsplit.benchmark, which imports
# torch: the help text names them with <budgets>, <budget names>, <methods> and <configs>,
# filled in by _Help only when the help is shown.
EXAMPLES = """\
examples:
  privsplit benchmark --dataset cifar10 --data-root /data/cifar10                 # budget small, every method
  privsplit benchmark --dataset cifar10 --methods ours,disco --budget small --data-root /data/cifar10
  privsplit benchmark --dataset cifar10 --budget paper --device cuda --data-root /data/cifar10
  privsplit benchmark --dataset digits --budget tiny --methods ours,no_noise     # a minute, offline (all 11 methods: a few minutes)

budgets (identical for every method of one benchmark):
<budgets>

Writes OUT/<method>/ (a run folder, with eval/), OUT/benchmark.md (privacy/utility/delta,
reconstruction and client-cost tables), OUT/results.json and OUT/privacy_utility.png.
Run the same command again to resume after an interruption: finished runs and
evaluations are reused. An OUT folder is locked to its dataset and budget.
"""


def _fill(text: str | None) -> str | None:
    if not text or "<" not in text:
        return text
    from .. import benchmark

    return (text.replace("<budgets>", "\n".join(f"  {n}: {b.about}" for n, b in benchmark.BUDGETS.items()))
            .replace("<budget names>", ", ".join(benchmark.BUDGETS))
            .replace("<methods>", benchmark._valid_text())
            .replace("<configs>", str(benchmark.CONFIG_DIR)))


class _Help(argparse.RawDescriptionHelpFormatter):
    """The benchmark's help, its budgets and method names filled in as it is shown."""

    def add_text(self, text: str | None) -> None:
        super().add_text(_fill(text))

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return _fill(super()._get_help_string(action))


def cmd_benchmark(args: argparse.Namespace) -> int:
    from ..benchmark import CONFIG_DIR, run_benchmark
    from ..report import pct

    set_threads(args.threads)
    results = run_benchmark(args.dataset, args.methods, args.budget, args.out, args.data_root, args.device,
                            args.lpips_weights, args.configs or CONFIG_DIR, False if args.no_progress else None)
    out = Path(args.out) if args.out else Path("benchmarks") / "runs" / f"{args.dataset}-{args.budget}"
    print((out / "benchmark.md").read_text())
    print(f"written to {out} ({len(results)} method(s); privacy chance {pct(results[0]['privacy_chance']) if results else 'n/a'})")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``benchmark`` to the CLI's subparsers."""
    p = sub.add_parser(
        "benchmark",
        help="train and evaluate every method under one budget; the paper's tables and plot",
        description="Train and evaluate each method with the same data, epochs and attackers, and write the "
        "paper's privacy/utility, reconstruction and client-cost tables and a privacy-utility plot.",
        epilog=EXAMPLES,
        formatter_class=_Help,
    )
    p.add_argument("--dataset", required=True, help="cifar10, celeba, fairface, utkface or digits")
    p.add_argument("--methods", default="all", metavar="LIST",
                   help="all, or a comma list of: <methods> (default all)")
    p.add_argument("--budget", default="small", help="<budget names> (default small; see below)")
    p.add_argument("--out", metavar="DIR", help="benchmark folder (default benchmarks/runs/<dataset>-<budget>/)")
    p.add_argument("--data-root", metavar="DIR", help="the data set's folder (not needed for digits)")
    add_device(p, "training and attacks run")
    add_lpips(p)
    p.add_argument("--configs", metavar="DIR", help="folder of the method configs (default <configs>)")
    add_threads(p)
    add_progress(p)
    p.set_defaults(func=cmd_benchmark)
