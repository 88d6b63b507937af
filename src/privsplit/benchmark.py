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

import dataclasses
import math
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError, DataError
from .formatting import from_jsonable, jsonable
from .lock import LOCK_NAME, FolderLock
from .queries import DEFAULT_FAMILIES, query_key
from .rundir import RunDir

# privsplit.config.shipped_configs(), without importing the configs' YAML (and, through the
# attacks, torch): `privsplit benchmark --help` shows the budgets and this folder.
CONFIG_DIR = Path(str(files("privsplit") / "configs"))


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
    # robust at the noise-free limit: the cut after stage 4, a 128-value bottleneck, two proxy families
    Entry("ours_rn18_4_robust", "ours", "{dataset}_rn18_4_robust.yaml"),
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
        batch_size: ``train.batch_size`` of every entry (None: each config's own).
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
    families: tuple[str, ...] = DEFAULT_FAMILIES
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
    # Enough steps for every model to learn its task (50 batches of 64), about the least that does: on
    # digits utility 68-97% (chance 53%), privacy from 29% (ours at 1 query) to 95% (no_noise, resnet18).
    "tiny": Budget(
        "tiny", epochs=5, data={"image_size": 16, "limit_train": 640, "limit_test": 360}, batch_size=64,
        attack_epochs=3, latency_repeats=2,
        about="a first look: 640 train / 360 test images of 16x16 (digits has 359), 5 training and 3 attacker "
        "epochs; digits' 11 methods took 4.7 min of CPU time on one thread, 26 s per method (7.2 min of wall time "
        "on 2 cores that two other jobs kept busy). Attackers this short are still improving: privacy overstated",
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
        about="a face set on a 2-core CPU: 8000 train / 2000 test images at 32x32, 5 training and 5 attacker "
        "epochs, attacks at 1, 16 and inf queries (see benchmarks/RESULTS.md for the measured time)",
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


def _write_record(out: Path, record: dict[str, Any]) -> None:
    """Write ``benchmark.json``, or refuse a folder made for other data or another budget."""
    import json

    from .rundir import write_json

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
    elif out.exists() and any(p.name != LOCK_NAME for p in out.iterdir()):
        raise ConfigError(f"{out} is not empty and is not a benchmark folder (no benchmark.json); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, record)


def train_entry(cfg, run_dir: Path, log: Callable[[str], None], progress: bool | None) -> str:  # noqa: ANN001
    """Train unless finished; continue an interrupted run. Returns what was done."""
    from .train.engine import Trainer

    if RunDir(run_dir).is_finished():
        log(f"{run_dir.name}: trained already, skipping training")
        return "skipped"
    resume = RunDir(run_dir).is_run()
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
    from .data import DATASETS

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
    with FolderLock(out, "benchmark output folder"):  # one benchmark writes a folder at a time
        _write_record(out, {"dataset": dataset, "budget": budget, "settings": b.settings(), "data": data,
                    "entries": [e.name for e in entries], "created": time.strftime("%Y-%m-%d %H:%M:%S")})
        return _run_entries(out, entries, configs, b, data, data_root, lpips_weights, device, progress, log)


def _run_entries(out: Path, entries: list[Entry], configs: dict[str, Any], b: Budget, data: dict[str, Any],
                 data_root: str | None, lpips_weights: str | None, device: str, progress: bool | None,
                 log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Train and evaluate every entry of the (locked) benchmark folder ``out``; write its tables."""
    import json

    from . import report
    from .attacks import AttackOptions
    from .evaluate import EvalOptions, evaluate_run
    from .rundir import write_json, write_text

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
            log(f"{e.name}: evaluated already, reusing {RunDir(run_dir).eval_results}")
        else:
            r = evaluate_run(run_dir, options, RunDir(run_dir).eval_dir)
            write_json(RunDir(run_dir).benchmark_stamp, stamp)
        done[e.name] = r
    results = [done[e.name] for e in ENTRIES if e.name in done]
    report.plot_privacy_utility(results, out / "privacy_utility.png")
    report.plot_privacy_queries(results, out / "privacy_queries.png")
    write_json(out / "results.json", jsonable({"benchmark": record, "runs": results}))
    train_s = {r["name"]: train_seconds(Path(r["run"])) for r in results}
    write_text(out / "benchmark.md", condense_warnings(report.benchmark_markdown(results, record, train_s), results, b))
    return results


def attackers_not_converged(r: dict[str, Any]) -> list[str]:
    """The attackers of one result that were still improving at their last epoch,
    as ``family@queries`` (``head@1``, ``decoder@inf``, ``inversion@16``)."""
    from .attacks.base import results_of

    return [name for res in results_of(r) for name in res.not_converged()]


def _by_queries_text(names: list[str]) -> str:
    """``head@1, decoder@1, head@inf`` -> ``at 1 query head, decoder; at inf queries head``
    (one number of queries, as for a deterministic client: the families alone)."""
    by: dict[str, list[str]] = {}
    for n in names:
        fam, _, q = n.rpartition("@")
        by.setdefault(q, []).append(fam)
    if len(by) == 1:
        return ", ".join(next(iter(by.values())))
    return "; ".join(f"at {q} quer{'y' if q == '1' else 'ies'} {', '.join(f)}" for q, f in by.items())


def condense_warnings(md: str, results: list[dict[str, Any]], b: Budget) -> str:
    """The benchmark's warnings, one line per method: a budget fixes the attackers'
    epochs, so "rerun with more --attack-epochs" (the advice of ``privsplit
    evaluate``) does not apply, and a short budget's attackers are all still
    improving: 100 lines that say one thing. Each attacker's own line, with its
    losses, stays in ``OUT/<method>/eval/report.md``. Other warnings are kept as they are."""
    from .report import warnings

    def about_convergence(w: str) -> bool:
        return "had not converged" in w or "used every step" in w

    dropped = {f"- {r['name']}: {w}" for r in results for w in warnings(r) if about_convergence(w)}
    lines = md.split("\n")
    at = next((i for i, line in enumerate(lines) if line in dropped), None)
    if at is None:
        return md
    block = [f"- attackers still improving at their last epoch (budget `{b.name}` trains each {b.attack_epochs} "
             "epoch(s)): an under-trained attacker finds less, so these methods' privacy figures are overstated; "
             "a larger --budget trains attackers longer. Each one's losses: OUT/<method>/eval/report.md"]
    block += [f"  - {r['name']}: {_by_queries_text(names)}" for r in results if (names := attackers_not_converged(r))]
    return "\n".join([*lines[:at], *block, *(line for line in lines[at:] if line not in dropped)])


def _read_eval(run_dir: Path, stamp: dict[str, Any]) -> dict[str, Any] | None:
    import json

    s, r = RunDir(run_dir).benchmark_stamp, RunDir(run_dir).eval_results
    if not (s.is_file() and r.is_file()) or json.loads(s.read_text()) != json.loads(json.dumps(stamp)):
        return None
    return from_jsonable(json.loads(r.read_text()))


def train_seconds(run_dir: Path) -> float | None:
    """Training time of a run: the sum of its epochs' ``epoch_s`` in ``metrics.jsonl``
    (robust to resumes, unlike a single session's wall time); None if unknown."""
    rows = RunDir(run_dir).read_metrics()
    last = {row["epoch"]: row.get("epoch_s") for row in rows}  # a resumed epoch counts once
    return sum(v for v in last.values() if v is not None) if last else None


__all__ = ["BUDGETS", "ENTRIES", "Budget", "Entry", "run_benchmark", "select_entries", "entry_config",
           "train_seconds", "attackers_not_converged", "condense_warnings"]
