"""``privsplit benchmark``: train and evaluate every method under one budget,
then write the paper's tables and a privacy-utility plot.

Every method of the paper's comparison is one *entry* (a method and its
config). A budget fixes what must be equal for a fair comparison: training
epochs, data subsets and image size, the attackers' settings. The output
folder is locked to its dataset and budget (``benchmark.json``), so one table
never mixes results of different data or budgets. An interrupted benchmark
resumes: finished runs are kept, unfinished ones continue from their last
checkpoint, evaluations already done are reused.

Example:
    >>> results = run_benchmark("cifar10", budget="small", data_root="/data/cifar10")  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .attacks.base import query_key
from .checks import flag
from .config import shipped_configs
from .errors import ConfigError, DataError

CONFIG_DIR = shipped_configs()


@dataclass(frozen=True)
class Entry:
    """One row of the paper's comparison: a method trained from a config file.

    Attributes:
        name: row name and sub-folder of the output folder.
        method: the method's registered name (``privsplit.methods.METHODS``).
        config: file name under the configs folder, ``{dataset}`` filled in.
    """

    name: str
    method: str
    config: str


ENTRIES = (
    Entry("ours_rn18_3", "ours", "{dataset}_rn18_3.yaml"),
    Entry("ours_rn18_4", "ours", "{dataset}_rn18_4.yaml"),
    Entry("ours_rn18_3_robust", "ours", "{dataset}_rn18_3_robust.yaml"),
    Entry("no_noise_rn18_3", "no_noise", "{dataset}_no_noise_rn18_3.yaml"),
    Entry("no_noise_rn18_4", "no_noise", "{dataset}_no_noise_rn18_4.yaml"),
    Entry("resnet18", "resnet18", "{dataset}_resnet18.yaml"),
    Entry("image_noise", "image_noise", "{dataset}_image_noise.yaml"),
    Entry("maxent", "maxent", "{dataset}_maxent.yaml"),
    Entry("disco", "disco", "{dataset}_disco.yaml"),
    Entry("deepobfuscator", "deepobfuscator", "{dataset}_deepobfuscator.yaml"),
)


@dataclass(frozen=True)
class Budget:
    """What every method of one benchmark gets, identically.

    Attributes:
        name: tiny, small or paper.
        epochs: ``train.epochs`` of every entry.
        data: ``data.*`` overrides (subset sizes, image size) of every entry.
        attack_epochs: epochs of every attacker (attribute and reconstruction).
        families: attribute attacker families.
        queries: numbers of repeated queries the attribute and reconstruction attacks run at.
        latency_repeats: batch-1 CPU passes timed for the client's latency.
        about: the expected cost, shown in ``--help``.
    """

    name: str
    epochs: int
    data: dict[str, Any] = field(default_factory=dict)
    batch_size: int | None = None
    attack_epochs: int = 10
    families: tuple[str, ...] = ("head", "mlp", "knn")
    queries: tuple[float, ...] = (1, 16, math.inf)
    latency_repeats: int = 20
    about: str = ""

    def settings(self) -> dict[str, Any]:
        """The settings recorded in (and compared against) ``benchmark.json``."""
        d = dataclasses.asdict(self)
        d.pop("about")
        d["families"] = list(self.families)
        d["queries"] = [query_key(q) for q in self.queries]
        return d


BUDGETS = {
    "tiny": Budget(
        "tiny", epochs=1, data={"image_size": 16, "limit_train": 96, "limit_test": 48}, batch_size=32,
        attack_epochs=1, latency_repeats=2,
        about="a smoke test: 96 train / 48 test images of 16x16, one epoch (seconds per method on digits)",
    ),
    "small": Budget(
        "small", epochs=5, data={"limit_train": 20000, "limit_test": 5000}, attack_epochs=5,
        about="20000 train / 5000 test images, 5 training and 5 attacker epochs, for a 2-core CPU: "
        "CIFAR-10's 9 methods took about 2 hours there with 2 attacker families at one query (measured per "
        "32x32 image on 2 cores: training ours ~670 images/s, deepobfuscator ~130/s; the three attackers "
        "together ~270 images/s per epoch); the attacks of a random client now run at 1, 16 and inf queries "
        "(a deterministic client's once) with a third family: expect well over 2 hours (not re-measured). "
        "The face sets' 178x178 images cost ~30x more each: run those on a GPU",
    ),
    "faces-cpu": Budget(
        "faces-cpu", epochs=5, data={"image_size": 32, "limit_train": 8000, "limit_test": 2000}, attack_epochs=5,
        queries=(1, 16),
        about="a face set on a 2-core CPU: 8000 train / 2000 test images at 32x32, 5 training and 5 attacker "
        "epochs, attacks at 1 and 16 queries (see benchmarks/RESULTS.md for the measured time)",
    ),
    "paper": Budget(
        "paper", epochs=20, data={"limit_train": None, "limit_test": None}, attack_epochs=20,
        about="all images, 20 training and 20 attacker epochs, as the configs; meant for a GPU (--device cuda)",
    ),
}


def entry_names() -> list[str]:
    return [e.name for e in ENTRIES]


def select_entries(methods: str) -> list[Entry]:
    """``all``, or a comma list of method names (``ours`` = both its splits) or entry names."""
    wanted = [m.strip() for m in methods.split(",") if m.strip()]
    if not wanted:
        raise ConfigError(f"--methods is empty; give all or some of: {_valid_text()}")
    if wanted == ["all"]:
        return list(ENTRIES)
    unknown = [w for w in wanted if w not in {e.name for e in ENTRIES} | {e.method for e in ENTRIES}]
    if unknown:
        raise ConfigError(f"unknown method(s) {', '.join(map(repr, unknown))}; valid choices: all, {_valid_text()}")
    return [e for e in ENTRIES if e.name in wanted or e.method in wanted]


def _valid_text() -> str:
    methods = list(dict.fromkeys(e.method for e in ENTRIES))
    return ", ".join(methods) + " (or one split: " + ", ".join(n for n in entry_names() if n not in methods) + ")"


def entry_config(entry: Entry, dataset: str, budget: Budget, config_dir: Path = CONFIG_DIR,
                 data_root: str | None = None, device: str | None = None):  # noqa: ANN201
    """The entry's config for ``dataset`` under ``budget``.

    CIFAR-10 uses ``configs/cifar10_*.yaml``; another dataset uses its own file if
    there is one (``celeba_rn18_3.yaml``), else the CIFAR-10 file with ``data.name``
    changed, the dataset's default image size, and the method's per-dataset
    settings (e.g. ``image_noise``'s sigma) left to the method's defaults.
    """
    from .config import apply_overrides, load_config
    from .methods import METHODS

    own = config_dir / entry.config.format(dataset=dataset)
    if own.is_file():
        cfg = load_config(own)
    else:
        base = config_dir / entry.config.format(dataset="cifar10")
        if not base.is_file():
            raise ConfigError(
                f"no config for {entry.name}: neither {own} nor {base} exists; give the repository's configs "
                "folder with --configs DIR"
            )
        cfg = load_config(base)
        cfg.data.name = dataset
        from .data import DATASETS

        cfg.data.image_size = DATASETS.get(dataset)().default_size
        per_dataset = {k for k, a in METHODS.get(cfg.method).args.items() if callable(a.default)}
        cfg.method_args = {k: v for k, v in (cfg.method_args or {}).items() if k not in per_dataset}
    sets = [f"train.epochs={budget.epochs}"]
    if budget.batch_size:
        sets.append(f"train.batch_size={budget.batch_size}")
    sets += [f"data.{k}={'null' if v is None else v}" for k, v in budget.data.items()]
    if data_root:
        sets.append(f"data.root={data_root}")
    if device:
        sets.append(f"train.device={device}")
    cfg = apply_overrides(cfg, sets)
    cfg.name = entry.name
    return cfg


def check_serves(entry: Entry, cfg) -> None:  # noqa: ANN001
    """Build the entry's model on the meta device (no data, no weights): a method
    that cannot serve the dataset says why before anything trains."""
    import torch

    from .data import DATASETS
    from .data.base import TaskInfo
    from .errors import PrivsplitError
    from .methods import build_method

    spec = DATASETS.get(cfg.data.name)()
    size = cfg.data.image_size or spec.default_size
    info = TaskInfo(cfg.data.name, spec.labels, (3, size, size))
    try:
        with torch.device("meta"):
            build_method(cfg).build(info)
    except PrivsplitError as e:
        raise ConfigError(f"{entry.name} ({entry.method}) cannot run on {cfg.data.name}: {e}") from None


def _lock(out: Path, record: dict[str, Any]) -> None:
    """Write ``benchmark.json``, or refuse a folder made for other data or another budget."""
    import json

    from .train.checkpoint import write_json

    path = out / "benchmark.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if (old.get("dataset"), old.get("budget")) != (record["dataset"], record["budget"]):
            raise ConfigError(
                f"{out} holds the {old.get('dataset')} benchmark with budget {old.get('budget')!r}, not {record['dataset']} "
                f"with {record['budget']!r}; one table never mixes data or budgets: choose another --out"
            )
        diffs = [k for k in ("settings", "data") if old.get(k) != record.get(k)]
        if diffs:
            show = "; ".join(f"{k} {old.get(k)} there, {record.get(k)} now" for k in diffs)
            raise ConfigError(
                f"{out} was made with other {' and '.join(diffs)} under the same names ({show}); "
                "one table never mixes them: choose another --out"
            )
        record["entries"] = list(dict.fromkeys([*old.get("entries", []), *record["entries"]]))
        record["created"] = old.get("created", record["created"])
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty and is not a benchmark folder (no benchmark.json); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, record)


def _from_json(x: Any) -> Any:
    """Undo report._jsonable's strings for infinities."""
    if x == "inf":
        return math.inf
    if x == "-inf":
        return -math.inf
    if isinstance(x, dict):
        return {k: _from_json(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_from_json(v) for v in x]
    return x


def train_entry(cfg, run_dir: Path, log: Callable[[str], None], progress: bool | None) -> str:  # noqa: ANN001
    """Train unless finished; continue an interrupted run. Returns what was done."""
    from .train.engine import Trainer

    if (run_dir / "run.json").is_file():
        log(f"{run_dir.name}: trained already, skipping training")
        return "skipped"
    resume = (run_dir / "config.yaml").is_file()
    log(f"{run_dir.name}: {'resuming' if resume else 'training'} ({cfg.method}, {cfg.train.epochs} epoch(s))")
    Trainer(cfg, run_dir, resume=resume, progress=progress).fit()
    return "resumed" if resume else "trained"


def run_benchmark(
    dataset: str,
    methods: str = "all",
    budget: str = "small",
    out: str | Path | None = None,
    data_root: str | None = None,
    device: str = "auto",
    lpips_weights: str | None = None,
    config_dir: str | Path = CONFIG_DIR,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train and evaluate the chosen methods; write ``benchmark.md``,
    ``results.json`` and ``privacy_utility.png`` into ``out`` and return one
    result per entry (as :func:`privsplit.evaluate.evaluate_run` gives it)."""
    import json

    from . import report
    from .attacks import AttackOptions
    from .data import DATASETS
    from .evaluate import EvalOptions, evaluate_run
    from .train.checkpoint import write_json, write_text

    DATASETS.get(dataset)  # unknown dataset: lists the valid ones
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget {budget!r}; valid choices: {', '.join(BUDGETS)}")
    b = BUDGETS[budget]
    entries = select_entries(methods)
    config_dir = Path(config_dir)
    out = Path(out) if out is not None else Path("benchmarks") / "runs" / f"{dataset}-{budget}"
    configs = {e.name: entry_config(e, dataset, b, config_dir, data_root, device) for e in entries}
    for e in entries:
        check_serves(e, configs[e.name])
    settings = {n: {k: v for k, v in dataclasses.asdict(c.data).items() if k not in ("root", "num_workers")}
                for n, c in configs.items()}
    data = settings[entries[0].name]
    odd = [n for n, d in settings.items() if d != data]
    if odd:  # a config file that sets its own data would make the comparison unfair
        raise ConfigError(f"the configs of {', '.join(odd)} use other data settings than {entries[0].name}'s "
                          f"({settings[odd[0]]} vs {data}); make their data sections agree")
    _lock(out, {"dataset": dataset, "budget": budget, "settings": b.settings(), "data": data,
                "entries": [e.name for e in entries], "created": time.strftime("%Y-%m-%d %H:%M:%S")})
    options = EvalOptions(
        overrides=[f"data.root={data_root}"] if data_root else [],
        attack=AttackOptions(epochs=b.attack_epochs, families=b.families, queries=b.queries),
        lpips_weights=lpips_weights, latency_repeats=b.latency_repeats, device=device, progress=progress, log=log,
    )
    stamp = {"budget": b.settings(), "data": data}
    done: dict[str, dict[str, Any]] = {}
    record = json.loads((out / "benchmark.json").read_text())
    for name in record["entries"]:  # earlier invocations' entries too, in the paper's order
        e = next(x for x in ENTRIES if x.name == name)
        run_dir = out / e.name
        if e.name not in configs:  # from an earlier invocation: report it if complete
            r = _read_eval(run_dir, stamp)
            if r is not None:
                done[e.name] = r
            continue
        try:
            action = train_entry(configs[e.name], run_dir, log, progress)
        except DataError as err:
            if data_root is None and configs[e.name].data.root is None:
                raise DataError(f"{err} (privsplit benchmark: give the folder with --data-root DIR)") from None
            raise
        r = None if action != "skipped" else _read_eval(run_dir, stamp)
        if r is not None:
            log(f"{e.name}: evaluated already, reusing {run_dir / 'eval' / 'results.json'}")
        else:
            r = evaluate_run(run_dir, options, run_dir / "eval")
            write_json(run_dir / "eval" / "benchmark_stamp.json", stamp)
        done[e.name] = r
    results = [done[e.name] for e in ENTRIES if e.name in done]
    report.plot_privacy_utility(results, out / "privacy_utility.png")
    report.plot_privacy_queries(results, out / "privacy_queries.png")
    write_json(out / "results.json", report._jsonable({"benchmark": record, "runs": results}))
    write_text(out / "benchmark.md", benchmark_markdown(results, record))
    return results


def _read_eval(run_dir: Path, stamp: dict[str, Any]) -> dict[str, Any] | None:
    import json

    s, r = run_dir / "eval" / "benchmark_stamp.json", run_dir / "eval" / "results.json"
    if not (s.is_file() and r.is_file()) or json.loads(s.read_text()) != json.loads(json.dumps(stamp)):
        return None
    return _from_json(json.loads(r.read_text()))


def _split(r: dict[str, Any]) -> str:
    s = r["config"]["model"]["split"]
    return "image" if s == "none" else s


def _attackers(attr: dict[str, Any]) -> str:
    from .report import pct

    fams = attr["families"]
    others = ", ".join(f"{f} {pct(v['best_acc'])}" for f, v in fams.items() if f != attr["best_family"])
    return attr["best_family"] + (f" ({others})" if others else "")


def train_seconds(run_dir: Path) -> float | None:
    """Training time of a run: the sum of its epochs' ``epoch_s`` in ``metrics.jsonl``
    (robust to resumes, unlike a single session's wall time); None if unknown."""
    import json

    f = run_dir / "metrics.jsonl"
    if not f.is_file():
        return None
    rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    last = {row["epoch"]: row.get("epoch_s") for row in rows}  # a resumed epoch counts once
    return sum(v for v in last.values() if v is not None) if last else None


def benchmark_markdown(results: list[dict[str, Any]], record: dict[str, Any]) -> str:
    """The three tables in the paper's form, with chance levels and warnings."""
    from .report import _num, pct, warnings

    dataset, settings = record["dataset"], record["settings"]
    md = [f"# Benchmark: {dataset}, budget `{record['budget']}`", "",
          f"- every method: {settings['epochs']} training epoch(s); data {', '.join(f'{k} {v}' for k, v in record['data'].items())}",
          f"- attackers trained after training on z: {settings['attack_epochs']} epoch(s), families "
          f"{', '.join(settings['families'])}, at {', '.join(settings.get('queries', ['1']))} quer(ies) of each image; "
          "privacy = the best attacker's test accuracy on the private label", ""]
    if not results:
        return "\n".join(md + ["No method has finished yet.", ""])
    r0 = results[0]
    qs = [q for q in ("16", "inf") if any(q in r.get("privacy_by_queries", {}) for r in results)]
    md += [f"## Privacy and utility ({dataset})", "",
           "| method | split | privacy@1 ↓ | best attacker | " + "".join(f"privacy@{q} ↓ | " for q in qs)
           + "utility ↑ | delta@1 ↑ |" + (" delta@16 ↑ |" if "16" in qs else ""),
           "|---|---|---|---|" + "---|" * len(qs) + "---|---|" + ("---|" if "16" in qs else ""),
           f"| chance | | {pct(r0['privacy_chance'])} | | " + "| " * len(qs) + f"{pct(r0['utility_chance'])} | |"
           + (" |" if "16" in qs else "")]
    given = r0["attacks"].get("attribute", {}).get("chance_given", {})
    md += [f"| knowing the {other} label (no z) | | {pct(v)} | | " + "| " * len(qs) + "| |" + (" |" if "16" in qs else "")
           for other, v in given.items()]
    for r in results:
        delta = "n/a" if r["delta"] is None else f"{100 * r['delta']:+.2f}"
        attr = r["attacks"].get("attribute")
        best = _attackers(attr) if attr else "n/a"
        by = r.get("privacy_by_queries", {})
        cells = "".join(f"{pct(by.get(q))} | " for q in qs)
        d16 = r.get("delta_by_queries", {}).get("16")
        md.append(f"| {r['name']} | {_split(r)} | {pct(r['privacy'])} | {best} | {cells}{pct(r['utility'])} | {delta} |"
                  + (f" {'n/a' if d16 is None else f'{100 * d16:+.2f}'} |" if "16" in qs else ""))
    md += ["", "Accuracies in %; delta = utility - privacy in points. Best attacker (at one query): the family with "
           "the highest test accuracy (the others' in brackets). privacy@k: the best attacker when the server "
           "averages k queries of each image (inf: the noise-free limit); a deterministic client has one value "
           "for every k. Attackers own the obfuscator: fresh draws of its randomness every epoch."
           + (" 'Knowing the ... label': an attacker who knows that label exactly and answers the most common "
              "private class given it: the privacy of a z that reveals the task's answer and nothing else." if given else ""), ""]
    rec = [r for r in results if "reconstruction" in r["attacks"]]
    if rec:
        md += ["## Reconstruction attack", "",
               "| method | MSE ↑ | L1 ↑ | SSIM ↓ | MS-SSIM ↓ | PSNR ↓ | LPIPS ↑ | ST-LPIPS ↑ |",
               "|---|---|---|---|---|---|---|---|"]
        base = rec[0]["attacks"]["reconstruction"]["mean_image_baseline"]
        rows = [(r["name"], r["attacks"]["reconstruction"]["metrics"]) for r in rec] + [("mean training image (no z)", base)]
        for name, m in rows:
            md.append(f"| {name} | {m['mse']:.2f} | {m['l1']:.2f} | {m['ssim']:.4f} | {_num(m['ms_ssim'])} | "
                      f"{_num(m['psnr'], '{:.2f}')} | {_num(m['lpips'])} | {_num(m.get('st_lpips'))} |")
        md += ["", "MSE and L1 on the 0-255 scale, PSNR in dB; the last row is the reference an attacker must beat. "
               "ST-LPIPS is the shift-tolerant LPIPS of the stlpips-pytorch package (its own weights, not ImageNet's): "
               "not comparable to LPIPS.", ""]
    md += ["## Client cost", "", "| method | GFLOPs | memory (MB) | bytes/sample (float32) | CPU latency, batch 1 (ms) |",
           "|---|---|---|---|---|"]
    for r in results:
        c = r["cost"]
        md.append(f"| {r['name']} | {c['gflops']:.3f} | {c['memory_mb']:.2f} | {c['bytes_per_sample_float32']} | "
                  f"{_num(c['latency_ms_cpu_batch1'], '{:.2f}')} |")
    md += ["", "## Time", "", "| method | training (s) | evaluation (s) |", "|---|---|---|"]
    train_s = {r["name"]: train_seconds(Path(r["run"])) for r in results}
    for r in results:
        md.append(f"| {r['name']} | {_num(train_s[r['name']], '{:.0f}')} | {_num(r.get('wall_s'), '{:.0f}')} |")
    total = sum((train_s[r["name"]] or 0) + (r.get("wall_s") or 0) for r in results)
    md += ["", f"Training: the sum of its epochs (test pass included); evaluation: encoding, every attacker and the "
           f"cost measurement. Total {total / 3600:.2f} h.", ""]
    warn = [f"- {r['name']}: {w}" for r in results for w in warnings(r)]
    if warn:
        md += ["", "## Warnings", "", *warn]
    md += ["", "![privacy vs utility](privacy_utility.png)", "", "![privacy vs queries](privacy_queries.png)", ""]
    return "\n".join(md)


EXAMPLES = """\
examples:
  privsplit benchmark --dataset cifar10 --data-root /data/cifar10                 # budget small, every method
  privsplit benchmark --dataset cifar10 --methods ours,disco --budget small --data-root /data/cifar10
  privsplit benchmark --dataset cifar10 --budget paper --device cuda --data-root /data/cifar10
  privsplit benchmark --dataset digits --budget tiny --methods ours,no_noise     # seconds, offline

budgets (identical for every method of one benchmark):
""" + "\n".join(f"  {n}: {b.about}" for n, b in BUDGETS.items()) + """

Writes OUT/<method>/ (a run folder, with eval/), OUT/benchmark.md (privacy/utility/delta,
reconstruction and client-cost tables), OUT/results.json and OUT/privacy_utility.png.
Run the same command again to resume after an interruption: finished runs and
evaluations are reused. An OUT folder is locked to its dataset and budget.
"""


def cmd_benchmark(args: argparse.Namespace) -> int:
    import torch

    from .report import pct

    if args.threads:
        torch.set_num_threads(args.threads)
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
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", required=True, help="cifar10, celeba, fairface, utkface or digits")
    p.add_argument("--methods", default="all", metavar="LIST",
                   help=f"all, or a comma list of: {_valid_text()} (default all)")
    p.add_argument("--budget", default="small", help=f"{', '.join(BUDGETS)} (default small; see below)")
    p.add_argument("--out", metavar="DIR", help="benchmark folder (default benchmarks/runs/<dataset>-<budget>/)")
    p.add_argument("--data-root", metavar="DIR", help="the data set's folder (not needed for digits)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda[:N] (default auto)")
    p.add_argument("--lpips-weights", metavar="FILE",
                   help="LPIPS(alex) weights (default $PRIVSPLIT_LPIPS_WEIGHTS; none: LPIPS unavailable)")
    p.add_argument("--configs", metavar="DIR", help=f"folder of the method configs (default {CONFIG_DIR})")
    p.add_argument("--threads", type=flag(int, ge=1), help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_benchmark)


__all__ = ["BUDGETS", "ENTRIES", "Budget", "Entry", "run_benchmark", "select_entries", "entry_config",
           "benchmark_markdown", "add_parser"]
