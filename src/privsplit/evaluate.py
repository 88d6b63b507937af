"""``privsplit evaluate`` and ``privsplit attack``: measure a trained run.

The obfuscator is frozen and used exactly as deployed: batch norm in eval
mode, its random ops on. The output of its deterministic stage (the encoder)
is computed once for both splits; the random stage is drawn from there, so
attackers can train on fresh draws every epoch (they own the obfuscator) and be
tested after k repeated queries of each image (``z`` averaged over k draws).

Example:
    >>> results = evaluate_run("runs/digits-ours-rn18_3-20260101-120000")  # doctest: +SKIP
    >>> results["privacy"], results["utility"]                              # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .attacks import ATTACKS, AttackOptions, EvalData, query_key
from .attacks.base import DEFAULT_FAMILIES, results_of
from .attacks.result import AttackResult, reconstruction_worst_case
from .config import adversary_queries, apply_overrides
from .data.base import LabeledImages, TaskInfo, load_dataset
from .errors import CheckpointError, ConfigError, DataError
from .metrics.accuracy import chance_level, model_accuracy
from .metrics.cost import client_cost
from .metrics.image import load_lpips, load_st_lpips
from .progress import Progress
from .run import Run, load_run
from .rundir import RunDir
from .tensors import resolve_device

DEFAULT_ATTACKS = ("attribute", "reconstruction")


@dataclass
class EvalOptions:
    """What ``evaluate`` measures and how.

    Attributes:
        attacks: names in ``ATTACKS`` to run.
        overrides: ``data.*`` settings changed from the run's config
            (``data.root=DIR``, ``data.limit_train=2000``, ...).
        attack: how attackers are trained.
        seed: seeds the obfuscator's random draws of the test images (and of the
            training images where attackers do not draw afresh).
        consistent: evaluate the client as deployed with consistent randomness
            (a device key): a repeated query of an image sends the same ``z``.
        encode_batch_size: batch size for computing ``z``.
        lpips_weights: LPIPS weights file (else ``$PRIVSPLIT_LPIPS_WEIGHTS``; else LPIPS is unavailable).
        latency_repeats: batch-1 CPU forward passes timed for the latency (0: skip).
        latency_threads: torch threads while timing (1: one core of an edge device).
        device: where z is computed and attackers train ("auto": CUDA if present, "cpu", "cuda[:N]");
            the client's latency is always measured on the CPU.
        max_cache_gib: refuse to cache more than this much ``z`` (and images) in memory.
        data: ``(train, test, info)`` to attack on instead of the data set the run's
            config names (a run trained on a user's own data sets, see
            :class:`~privsplit.train.engine.Trainer`); ``overrides`` then do not apply.
        progress: progress bars (None: only on a terminal).
        log: where progress lines go.
        model: a SplitModel to load the weights into instead of rebuilding it from
            the config: a run trained on a user's own model parts.
    """

    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    overrides: list[str] = field(default_factory=list)
    attack: AttackOptions = field(default_factory=AttackOptions)
    seed: int = 0
    consistent: bool = False
    encode_batch_size: int = 256
    lpips_weights: str | None = None
    latency_repeats: int = 20
    latency_threads: int = 1
    device: str = "cpu"
    max_cache_gib: float = 16.0
    data: tuple[Any, Any, TaskInfo] | None = None
    progress: bool | None = None
    log: Callable[[str], None] = print
    model: Any = None


def check_attacks(names: list[str] | tuple[str, ...], options: AttackOptions | None = None) -> tuple[str, ...]:
    """Validate attack names (raises ConfigError listing the valid ones) and,
    given ``options``, each attack's own options, before any work."""
    if not names:
        raise ConfigError(f"name at least one attack; valid choices: {', '.join(ATTACKS.names())}")
    for n in names:
        ATTACKS.get(n)
        if options is not None:
            ATTACKS.get(n).check(options)
    return tuple(names)


def worst_case_reconstruction(attacks: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The reconstruction privacy of a run's ``attacks`` (name -> result or record): at each
    number of queries and for each image metric, the closest any reconstruction came,
    and which attack (see :func:`~privsplit.attacks.result.reconstruction_worst_case`)."""
    return reconstruction_worst_case(results_of({"attacks": attacks}))


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run folders named directly, or found one level below a folder of runs."""
    runs: list[Path] = []
    for p in map(Path, paths):
        if RunDir(p).is_run():
            runs.append(p)
        elif p.is_dir():
            found = sorted(q for q in p.iterdir() if RunDir(q).is_run())
            if not found:
                raise CheckpointError(f"{p} is neither a privsplit run folder (no config.yaml) nor a folder of runs")
            runs += found
        else:
            raise CheckpointError(f"{p} does not exist")
    return runs


def _data_config(run: Run, overrides: list[str]):  # noqa: ANN202
    bad = [o for o in overrides if not o.partition("=")[0].startswith("data.")]
    if bad:
        raise ConfigError(
            f"evaluate can change only data.* settings (the model is the trained one); not: {', '.join(bad)}"
        )
    return apply_overrides(run.config, overrides).data


def load_eval_data(run: Run, options: EvalOptions, keep_images: bool) -> tuple[EvalData, LabeledImages]:
    """Reload the run's data set, check its labels, and compute ``z`` of both splits once."""
    data_cfg = _data_config(run, options.overrides)
    # data.limit_* draw seeded random subsets (load_dataset), so a limited run is
    # evaluated on the same images it was trained and tested on.
    train, test, info = options.data or load_dataset(data_cfg)
    expected = run.record["task"]
    if info.labels != expected["labels"]:
        diff = [t for t in set(info.labels) | set(expected["labels"]) if info.labels.get(t) != expected["labels"].get(t)]
        raise DataError(
            f"the data set's labels do not match the run's: {', '.join(sorted(diff))} "
            f"(data: {_short(info.labels)}; run {run.dir}: {_short(expected['labels'])}). "
            f"Evaluate on the data set the run was trained on ({expected['dataset']})"
        )
    if list(info.image_shape) != list(expected["image_shape"]):
        raise DataError(
            f"images are {tuple(info.image_shape)} but the run was trained on {tuple(expected['image_shape'])}; "
            "do not change data.image_size at evaluation"
        )
    if len(train) < 2 or len(test) < 1:
        raise DataError(f"need at least 2 training and 1 test image, got {len(train)} and {len(test)}")
    obf = run.model.obfuscator.eval()
    for p in obf.parameters():
        p.requires_grad_(False)
    per_sample = 4 * math.prod(obf.encoded_shape) + (math.prod(info.image_shape) if keep_images else 0)
    need = (len(train) + len(test)) * per_sample / 2**30
    if need > options.max_cache_gib:
        fit = int(options.max_cache_gib * 2**30 / per_sample)
        raise ConfigError(
            f"caching the encoder's output{' and the images' if keep_images else ''} of {len(train)} + {len(test)} images needs "
            f"{need:.1f} GiB (limit {options.max_cache_gib:g} GiB): evaluate on a random sample, e.g. "
            f"--set data.limit_train={max(1, int(fit * 0.8))} --set data.limit_test={max(1, fit - int(fit * 0.8))}"
        )
    nw = data_cfg.num_workers
    e_train, y_train, x_train = encode(obf, train, options, keep_images, "encode train", nw)
    e_test, y_test, x_test = encode(obf, test, options, keep_images, "encode test", nw)
    data = EvalData(run.config, info, obf, e_train, e_test, y_train, y_test, x_train, x_test,
                    seed=options.seed, consistent=options.consistent)
    return data, test


@torch.no_grad()
def encode(
    client: torch.nn.Module,
    ds: LabeledImages,
    options: EvalOptions,
    keep_images: bool,
    desc: str = "encode",
    num_workers: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
    """The deterministic stage of the client (``client.encode``) for every image
    of ``ds``, its labels, and the uint8 images if asked."""
    from .tensors import batches

    es, xs = [], []
    labels: dict[str, list[torch.Tensor]] = {}
    bs = options.encode_batch_size
    device = resolve_device(options.device)  # the cache stays where it is computed
    it = batches(ds, torch.arange(len(ds)), bs, num_workers)
    for x, y in Progress(it, total=-(-len(ds) // bs), desc=desc, unit="batch", enabled=options.progress):
        x = x.to(device)
        es.append(client.encode(x).float())
        for k, v in y.items():
            labels.setdefault(k, []).append(v.to(device))
        if keep_images:
            xs.append((x * 255).round().clamp(0, 255).to(torch.uint8))
    return torch.cat(es), {k: torch.cat(v) for k, v in labels.items()}, (torch.cat(xs) if keep_images else None)


@torch.no_grad()
def utility(run: Run, data: EvalData) -> dict[str, Any]:
    """Test accuracy of each trained head on the cached ``z`` of the test split."""
    out = {}
    for name, head in run.model.heads.items():
        target = run.model.head_targets[name]
        acc = model_accuracy(head, data.z_test(1), data.y_test[target])
        chance = chance_level(data.y_test[target])
        out[name] = {"target": target, "accuracy": acc, "chance": chance,
                     "learned": task_learned(acc, chance, len(data.y_test[target]))}
    return out


def task_learned(accuracy: float, chance: float, n: int) -> bool:
    """Whether a head has learned its task: its accuracy is above its chance level beyond
    sampling noise (the attackers' rule, :func:`~privsplit.attacks.base.leak_threshold`).
    A model that has not has no privacy-utility trade-off to speak of: its delta means nothing."""
    from .attacks.base import leak_threshold

    return accuracy > leak_threshold(chance, n)


def evaluate_run(run_dir: str | Path, options: EvalOptions | None = None, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Measure one finished run: utility, every attack, client cost. Writes
    ``results.json``, ``report.md`` and plots to ``out_dir`` (default
    ``RUN_DIR/eval``) and returns the results."""
    from . import report

    options = options or EvalOptions()
    attacks = check_attacks(options.attacks, options.attack)
    run_dir = Path(run_dir)
    RunDir(run_dir).read_record()  # a clear error for an unfinished run, before any work
    out = Path(out_dir) if out_dir is not None else RunDir(run_dir).eval_dir
    perceptual = any(ATTACKS.get(a).needs_lpips for a in attacks)
    lpips = load_lpips(options.lpips_weights) if perceptual else None
    st_lpips = load_st_lpips() if perceptual else None
    t0 = time.time()
    torch.manual_seed(options.seed)
    run = load_run(run_dir, parts=("obfuscator", "heads"), device=resolve_device(options.device),
                   model=options.model)
    log = options.log
    data, _ = load_eval_data(run, options, keep_images=any(ATTACKS.get(a).needs_images for a in attacks))
    data.perceptual = {"lpips": lpips, "st_lpips": st_lpips}
    log(f"{run_dir}: z {tuple(data.z_shape)} of {data.n_train} train / {len(data.e_test)} test images")
    results: dict[str, Any] = {
        "run": str(run_dir),
        "name": run_dir.name,
        "config": run.config.to_dict(),
        "data_overrides": list(options.overrides),
        "data_limits": {"train": run.config.data.limit_train, "test": run.config.data.limit_test,
                        "note": "data.limit_* are seeded random subsets (data.split_seed)"},
        "dataset": data.info.dataset,
        "labels": data.info.labels,
        "image_shape": list(data.info.image_shape),
        "z_shape": list(data.z_shape),
        "n_train": data.n_train,
        "n_test": len(data.e_test),
        "seeds": {"draws": options.seed, "attackers": options.attack.seed, "training": run.config.train.seed},
        "random_ops": list(run.model.obfuscator.random_ops),
        "consistent_randomness": options.consistent,
        "heads": utility(run, data),
        "attacks": {},
    }
    first = next(iter(results["heads"].values()))
    results["utility"] = first["accuracy"]
    results["utility_chance"] = first["chance"]
    results["task_learned"] = first["learned"]  # False: delta means nothing (report.md and the summary say so)
    out.mkdir(parents=True, exist_ok=True)
    attack_options = dataclasses.replace(options.attack, out_dir=out, log=log, progress=options.progress)
    done: list[AttackResult] = []
    for name in attacks:
        done.append(ATTACKS.create(name).run(data, attack_options))
        results["attacks"][name] = done[-1].record
    results.update(privacy_figures(results["utility"], done))
    results["proxy_gap"] = proxy_gap(run, next((r for r in done if r.role == "privacy"), None))
    results["reconstruction_privacy"] = reconstruction_worst_case(done)
    results["cost"] = client_cost(run.model.obfuscator.cpu(), tuple(data.info.image_shape), options.latency_repeats,
                                  options.latency_threads)
    results["lpips_weights"] = lpips.source if lpips else None
    results["st_lpips_weights"] = st_lpips.source if st_lpips else None
    results["wall_s"] = round(time.time() - t0, 1)
    results["versions"] = {"torch": torch.__version__, "privsplit": _version()}
    report.write_run_report(results, out, run_dir)
    return results


def privacy_figures(utility: float, done: list[AttackResult]) -> dict[str, Any]:
    """The run's privacy: the headline of the result whose role is ``privacy`` (None
    without one), its chance level, and delta = utility - privacy, at one query and
    at every number of queries measured. Utility is what the server's head reaches on
    single queries; privacy at k queries is the best attacker's."""
    res = next((r for r in done if r.role == "privacy"), None)
    if res is None:
        return {"privacy": None, "privacy_chance": None, "delta": None, "privacy_by_queries": {}, "delta_by_queries": {}}
    by = res.headline_by_queries()
    return {"privacy": res.headline(), "privacy_chance": res.chance(), "delta": utility - res.headline(),
            "privacy_by_queries": by, "delta_by_queries": {k: utility - v for k, v in by.items()}}


def proxy_gap(run: Run, attr: AttackResult | dict[str, Any] | None) -> list[dict[str, Any]]:
    """For each attribute proxy adversary of the run: its test accuracy in the last
    training epoch beside the fresh attackers' on the same view (its number of
    queries), when the attribute attack ran at that view and on that target.
    A large gap means the obfuscator fooled its proxy, not the attackers."""
    if not attr:
        return []
    metrics = run.record.get("metrics", {})
    out = []
    for adv in run.config.adversaries:
        key = query_key(adversary_queries(adv) if run.model.obfuscator.random_ops else 1)
        proxy = metrics.get(f"test/adv/{adv.name}/acc")
        if proxy is None or adv.target != attr["target"]:
            continue
        fresh = attr["by_queries"].get(key)  # None: the attack did not run at that view
        out.append({"adversary": adv.name, "family": adv.family, "queries": key, "proxy": proxy,
                    "fresh": fresh["accuracy"] if fresh else None, "fresh_family": fresh["best_family"] if fresh else None})
    return out


# The quick check at the end of ``privsplit train``: every attacker family but the costly
# ``head`` (a copy of the backbone's rest: on the default digits run it took 5x as long
# as the other four together and was never the best), for evaluate's 10 epochs. Each
# attacker is exactly the one evaluate trains (a family's seed does not depend on which
# others run), so on the same images the quick figure is never above evaluate's; on the
# default run it equals it at 1 and 16 queries (50.70% and 93.87%; with the first
# check's mlp + knn for 3 epochs: 39.28%).
QUICK_FAMILIES: tuple[str, ...] = ("mlp", "linear", "mlp_flat", "knn")
QUICK_EPOCHS = 10


def quick_privacy(run_dir: str | Path, max_train: int = 2000, max_test: int = 1000, epochs: int = QUICK_EPOCHS,
                  queries: tuple[float, ...] = (1, 16), families: tuple[str, ...] = QUICK_FAMILIES,
                  device: str = "cpu", progress: bool | None = False, model: Any = None) -> dict[str, Any]:
    """A fast look at what ``z`` leaks, for the end of ``privsplit train``: the cheap
    attacker families (fresh draws) at 1 and 16 queries, on at most ``max_train`` /
    ``max_test`` images. Seconds on a CPU. It is a lower bound: ``evaluate`` adds the
    ``head`` family and the noise-free limit (and, on a large data set, uses every
    image); each attacker here is one of evaluate's, so on the same images the best
    attacker there can only do as well or better.

    Returns ``{"privacy_by_queries": {"1": .., "16": ..}, "chance": .., "families": [..],
    "best_family_by_queries": {..}, "epochs": .., "n_train": .., "n_test": .., "wall_s": ..,
    "lower_bound": True, ...}``: what :func:`save_quick_privacy` writes to ``run.json``.
    """
    t0 = time.time()
    run = load_run(run_dir, parts=("obfuscator",), device=resolve_device(device), model=model)
    limits = {"train": run.config.data.limit_train, "test": run.config.data.limit_test}
    caps = {"train": max_train, "test": max_test}
    overrides = [f"data.limit_{k}={caps[k]}" for k in caps if limits[k] is None or limits[k] > caps[k]]
    options = EvalOptions(overrides=overrides, progress=progress, latency_repeats=0, device=device)
    data, _ = load_eval_data(run, options, keep_images=False)
    attack = AttackOptions(epochs=epochs, families=tuple(families), queries=tuple(queries), progress=progress,
                           log=lambda s: None)
    r = ATTACKS.create("attribute").run(data, attack)
    by = {q: v["accuracy"] for q, v in r["by_queries"].items()}
    return {
        "privacy_by_queries": by,
        "best_family_by_queries": {q: v["best_family"] for q, v in r["by_queries"].items()},
        "chance": r["chance"],
        "verdict": r["verdict"],
        "families": list(families),
        "epochs": epochs,
        "fresh_draws": True,
        "n_train": data.n_train,
        "n_test": len(data.e_test),
        "wall_s": round(time.time() - t0, 1),
        "lower_bound": True,
        "attackers_text": _quick_text(families),
        "note": f"a lower bound on privsplit evaluate's figure: attacker families {', '.join(families)} (evaluate: "
                f"{', '.join(DEFAULT_FAMILIES)}), {epochs} epochs, at most {max_train} training and {max_test} test "
                "images; evaluate also attacks the noise-free limit (inf)",
    }


_FAMILY_WORDS = {"linear": "linear probe", "mlp_flat": "MLP on unpooled z", "knn": "k-NN", "mlp": "MLP",
                 "head": "the server's network"}


def _quick_text(families: tuple[str, ...] | list[str]) -> str:
    words = [_FAMILY_WORDS.get(f, f) for f in families]
    joined = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    return f"{joined} attackers owning the obfuscator"


def save_quick_privacy(run_dir: str | Path, quick: dict[str, Any]) -> None:
    """Add the quick check to the run's ``run.json`` (key ``quick_privacy``), atomically."""
    rd = RunDir(run_dir)
    rd.write_record({**rd.read_record(), "quick_privacy": {k: v for k, v in quick.items() if k != "attackers_text"}})


def evaluate_runs(paths: list[str | Path], options: EvalOptions | None = None, out_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Evaluate several runs; with more than one, also write a comparison
    (``comparison.md``, ``results.json``, privacy-vs-utility scatter) to ``out_dir``."""
    from . import report

    options = options or EvalOptions()
    check_attacks(options.attacks, options.attack)
    runs = find_runs(paths)
    for r in runs:
        RunDir(r).read_record()  # fail on an unfinished run before spending time on the others
    several = len(runs) > 1
    if several and out_dir is None:
        out_dir = _common_parent(runs) / "comparison"
    all_results = []
    for r in runs:
        sub = (Path(out_dir) / r.name) if (several and out_dir is not None) else out_dir
        all_results.append(evaluate_run(r, options, sub))
    if several:
        report.write_comparison(all_results, Path(out_dir))
    return all_results


def _common_parent(runs: list[Path]) -> Path:
    parents = {r.resolve().parent for r in runs}
    return parents.pop() if len(parents) == 1 else Path(".")


def _short(labels: dict[str, list[str]]) -> str:
    return "; ".join(f"{t}: {', '.join(v[:4])}{', ...' if len(v) > 4 else ''} ({len(v)})" for t, v in labels.items())


def _version() -> str:
    from . import __version__

    return __version__


__all__ = ["EvalOptions", "DEFAULT_ATTACKS", "evaluate_run", "evaluate_runs", "find_runs", "load_eval_data", "encode",
           "check_attacks", "quick_privacy", "save_quick_privacy", "task_learned",
           "worst_case_reconstruction"]
