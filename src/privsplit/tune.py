"""``privsplit tune``: search config settings for the privacy-utility frontier with Optuna.

Each trial trains the base config with the sampled settings on the training split less a
seeded validation share (``data.val_fraction``) and attacks it on those validation images with
the real attack suite (:func:`privsplit.evaluate.evaluate_run`): the test split is not read.
The study lives in Optuna storage (a journal file by default, or a database URL), so a killed
study continues when rerun and several processes share one study.
"""

from __future__ import annotations

import math
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import Config, apply_overrides, load_config
from .errors import ConfigError, PrivsplitError, TrainingDiverged
from .queries import query_key
from .rundir import RunDir

DEFAULT_FAMILIES = ("mlp", "linear")  # quick attackers; --families head,mlp,knn,linear,mlp_flat for all
_OPS = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}


@dataclass
class Objective:
    name: str  # "utility" or "privacy@K"
    queries: float | None = None

    @property
    def maximise(self) -> bool:
        return self.queries is None


@dataclass
class TuneOptions:
    """What a study searches and how each trial is scored (see ``privsplit tune --help``)."""

    space: dict[str, Any]
    config: str | None = None
    overrides: list[str] = field(default_factory=list)
    objectives: str = "utility,privacy@16,privacy@inf"
    targets: list[str] = field(default_factory=list)
    n_trials: int = 20
    out: str = "tune"
    storage: str | None = None
    study_name: str = "privsplit"
    val_fraction: float = 0.2
    attack_epochs: int = 3
    families: tuple[str, ...] = DEFAULT_FAMILIES
    prune_margin: float | None = 0.25  # utility points below the best at an epoch; None: never prune
    seed: int = 0
    device: str = "cpu"
    confirm: bool = False
    progress: bool | None = None
    references: list[str] = field(default_factory=list)  # configs measured at the study's budget, for comparison


def parse_objectives(text: str) -> list[Objective]:
    out: list[Objective] = []
    for item in (t.strip() for t in text.split(",")):
        m = re.fullmatch(r"privacy@(\d+|inf)", item)
        if item == "utility":
            out.append(Objective("utility"))
        elif m and (m.group(1) == "inf" or int(m.group(1)) >= 1):
            out.append(Objective(item, math.inf if m.group(1) == "inf" else int(m.group(1))))
        else:
            raise ConfigError(f"objective {item!r} is not utility or privacy@K (K a whole number or inf), "
                              "e.g. --objectives utility,privacy@16,privacy@inf")
    if len({o.name for o in out}) != len(out) or not any(o.maximise for o in out):
        raise ConfigError(f"--objectives {text!r} must name utility once and each privacy@K at most once")
    return out


def parse_target(text: str, objectives: list[Objective]) -> tuple[str, str, float]:
    m = re.fullmatch(r"\s*(utility|privacy@(?:\d+|inf))\s*(<=|>=)\s*([0-9.eE+-]+)\s*", text)
    try:
        value = float(m.group(3)) if m else math.nan
    except ValueError:
        value = math.nan
    if not m or not 0 <= value <= 1:
        raise ConfigError(f"target {text!r} must look like privacy@16<=0.25 or utility>=0.8 (a share from 0 to 1)")
    if m.group(1) not in {o.name for o in objectives}:
        raise ConfigError(f"target {text!r} names {m.group(1)}, which is not among the objectives "
                          f"({', '.join(o.name for o in objectives)}); add it to --objectives")
    return m.group(1), m.group(2), value


def load_space(path: str | Path) -> dict[str, Any]:
    try:
        space = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read the search space {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"search space {path} is not valid YAML: {' '.join(str(e).split())}") from None
    return space


def check_space(space: Any, base: Config) -> None:
    """Every setting and every end of its range through the config's own validation, before any trial."""
    if not isinstance(space, dict) or not space:
        raise ConfigError("the search space is empty: give a YAML mapping such as "
                          "'reduction.0.sigma: {low: 1, high: 16, log: true}' or 'train.lam: [0.1, 1]'")
    for key, spec in space.items():
        if isinstance(spec, list):
            if not spec:
                raise ConfigError(f"search space {key}: the list of choices is empty")
            values = spec
        elif isinstance(spec, dict) and {"low", "high"} <= set(spec) and set(spec) <= {"low", "high", "log", "int"}:
            low, high = spec["low"], spec["high"]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low > high:
                raise ConfigError(f"search space {key}: low and high must be numbers with low <= high, got {spec}")
            if spec.get("log") and low <= 0:
                raise ConfigError(f"search space {key}: a log range needs low > 0, got {low}")
            values = [low, high]
        else:
            raise ConfigError(f"search space {key}: give a list of choices or {{low: A, high: B[, log: true]"
                              f"[, int: true]}}, got {spec!r}")
        for v in values:
            try:
                apply_overrides(base, [f"{key}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"])
            except ConfigError as e:
                raise ConfigError(f"search space {key}={v!r} is refused by the config: {e}") from None


def _override(key: str, value: Any) -> str:
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def sample(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, spec in space.items():
        if isinstance(spec, list):
            out[key] = trial.suggest_categorical(key, spec)
        elif spec.get("int"):
            out[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        else:
            out[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
    return out


def open_storage(storage: str | None, out: Path):  # noqa: ANN201
    """A database URL (sqlite:///..., postgresql://...) or a journal file path (default OUT/study.journal)."""
    import optuna

    try:
        if storage and "://" in storage:
            return optuna.storages.RDBStorage(storage, heartbeat_interval=None)
        path = Path(storage) if storage else out / "study.journal"
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    except Exception as e:  # noqa: BLE001  optuna / sqlalchemy raise many kinds
        raise ConfigError(f"cannot open the study storage {storage or out / 'study.journal'}: "
                          f"{' '.join(str(e).split())[:200]}") from None


def trial_figures(results: dict[str, Any], objectives: list[Objective]) -> list[float]:
    """The one place that reads utility and privacy from an evaluation's results."""
    by = results["privacy_by_queries"]
    return [float(results["utility"]) if o.maximise else float(by[query_key(o.queries)]) for o in objectives]


def _feasible(values: list[float], objectives: list[Objective], targets: list[tuple[str, str, float]]) -> bool:
    named = {o.name: v for o, v in zip(objectives, values)}
    return all(_OPS[op](named[n], t) for n, op, t in targets)


def _shortfall(values: list[float], objectives: list[Objective], targets: list[tuple[str, str, float]]) -> float:
    named = {o.name: v for o, v in zip(objectives, values)}
    return sum(max(0.0, named[n] - t) if op == "<=" else max(0.0, t - named[n]) for n, op, t in targets)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _retry_interrupted(study: Any) -> None:
    """Trials left RUNNING by a dead process of this machine are marked failed (interrupted) and re-queued."""
    import optuna

    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get("host") == host and not _alive(int(t.user_attrs.get("pid", 0))):
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", "interrupted (its process died); retried")
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            study.enqueue_trial(t.params, skip_if_exists=False)


def _counted(study: Any) -> list[Any]:
    """Trials that count towards n_trials: finished or running, not interrupted, not surplus."""
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL,
            optuna.trial.TrialState.RUNNING)
    return [t for t in study.get_trials(deepcopy=False, states=done)
            if not t.user_attrs.get("surplus") and "interrupted" not in t.user_attrs.get("fail_reason", "")]


def tune(options: TuneOptions, log: Any = print) -> dict[str, Any]:
    """Run (or continue) a study; writes OUT/best.yaml, OUT/report.md and OUT/frontier.png.

    Returns ``{"best": trial dict | None, "feasible": bool, "trials": [...]}``."""
    objectives = parse_objectives(options.objectives)
    targets = [parse_target(t, objectives) for t in options.targets]
    base = load_config(options.config, options.overrides)
    check_space(options.space, base)
    references = {}
    for r in options.references:
        if reference_name(r) in references:
            raise ConfigError(f"--reference: two configs named {reference_name(r)!r} (file stems label them); "
                              "rename one")
        try:
            ref = load_config(r)
            if ref.data.name != base.data.name:
                raise ConfigError(f"it is a config for {ref.data.name}, the study's is for {base.data.name}")
            references[reference_name(r)] = apply_overrides(ref, budget_overrides(base))
        except ConfigError as e:
            raise ConfigError(f"--reference {r}: {e}") from None
    if not 0 < options.val_fraction < 1:
        raise ConfigError(f"--val-fraction must be between 0 and 1 (exclusive), got {options.val_fraction}")
    if options.prune_margin is not None and not 0 <= options.prune_margin <= 1:
        raise ConfigError(f"--prune-margin must be a share of accuracy from 0 to 1 (e.g. 0.25), got {options.prune_margin}")
    from .attacks import AttackOptions
    from .evaluate import EvalOptions, check_attacks

    attack = AttackOptions(epochs=options.attack_epochs, families=tuple(options.families),
                           queries=tuple(sorted({o.queries for o in objectives if o.queries} | {1})),
                           seed=options.seed, progress=options.progress)
    check_attacks(["attribute"], attack)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    import optuna
    from .train.engine import Callback, train

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(options.storage, out)
    study = optuna.create_study(
        storage=storage, study_name=options.study_name, load_if_exists=True,
        directions=["maximize" if o.maximise else "minimize" for o in objectives],
        sampler=optuna.samplers.NSGAIISampler(seed=None, population_size=max(4, min(20, options.n_trials))),
    )
    _retry_interrupted(study)

    def trial_config(params: dict[str, Any], val: float) -> Config:
        return apply_overrides(base, [*(_override(k, v) for k, v in params.items()), f"data.val_fraction={val}",
                                      f"train.device={options.device}"])

    class Epochs(Callback):
        """A line per finished epoch of a trial; a trial whose validation utility at an epoch is more than
        ``prune_margin`` below the best finished trial's at that epoch is stopped (pruned)."""

        def __init__(self, trial: Any) -> None:
            self.trial = trial

        def on_epoch_end(self, ctx: Any) -> None:
            m = ctx.metrics
            acc = next((v for k, v in m.items() if k.startswith("test/") and k.endswith("/acc")
                        and not k.startswith("test/adv/")), None)
            log(f"trial {self.trial.number} epoch {ctx.epoch}/{ctx.cfg.train.epochs}: task loss "
                f"{m.get('train/task_loss', math.nan):.4f}"
                + (f", validation utility {100 * acc:.1f}%" if acc is not None else "") + f", {m['epoch_s']:.1f}s")
            if acc is None:
                return
            self.trial.set_user_attr(f"utility_epoch_{ctx.epoch}", acc)
            if options.prune_margin is None or ctx.epoch >= ctx.cfg.train.epochs:
                return
            best = max((b for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                        if (b := t.user_attrs.get(f"utility_epoch_{ctx.epoch}")) is not None), default=None)
            if best is not None and acc < best - options.prune_margin:
                raise optuna.TrialPruned(f"validation utility {100 * acc:.1f}% at epoch {ctx.epoch} is more than "
                                         f"{100 * options.prune_margin:g} points below the best finished trial's "
                                         f"{100 * best:.1f}% (--prune-margin)")

    def measure(cfg: Config, run_dir: Path, callbacks: list[Any], resume: bool = False) -> tuple[list[float], int]:
        """Train ``cfg`` on the training split less the validation share and attack it on that share:
        the objectives and the number of validation images they were measured on."""
        from .evaluate import evaluate_run

        train(cfg, run_dir, resume=resume, progress=options.progress, callbacks=callbacks, log=lambda _m: None)
        results = evaluate_run(run_dir, EvalOptions(attacks=("attribute",), attack=attack, seed=options.seed,
                                                    latency_repeats=0, device=options.device,
                                                    progress=options.progress, log=lambda _m: None))
        return trial_figures(results, objectives), int(results["n_test"])

    def objective(trial: Any) -> list[float]:
        params = sample(trial, options.space)
        run_dir = out / "trials" / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        values, n = measure(trial_config(params, options.val_fraction), run_dir, [Epochs(trial)])
        trial.set_user_attr("n_val", n)
        return values

    def run_trial() -> Any:
        """Ask Optuna for one trial, run it and tell the outcome: complete; pruned or failed (diverged) with its
        reason in a user attr, the study going on; interrupted (Ctrl-C) re-queued for the next run."""
        trial = study.ask()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        if len([t for t in _counted(study) if t.number < trial.number]) >= options.n_trials:
            trial.set_user_attr("surplus", True)  # another process took the last slot first
            return study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        try:
            values = objective(trial)
        except optuna.TrialPruned as e:
            trial.set_user_attr("prune_reason", str(e))
            return study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except TrainingDiverged as e:
            trial.set_user_attr("fail_reason", str(e))
            return study.tell(trial, state=optuna.trial.TrialState.FAIL)
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C); retried")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(trial.params, skip_if_exists=False)
            raise
        except BaseException as e:  # a bug or a broken setup: recorded (not retried) and shown as the error it is
            trial.set_user_attr("fail_reason", " ".join(f"{type(e).__name__}: {e}".split())[:300])
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        return study.tell(trial, values)

    def report_line(t: Any) -> None:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
        if t.state == optuna.trial.TrialState.COMPLETE:
            figs = ", ".join(f"{o.name} {100 * v:.1f}%" for o, v in zip(objectives, t.values))
            ok = _feasible(t.values, objectives, targets)
            log(f"trial {t.number}: {shown}: {figs}" + (f"; {'feasible' if ok else 'infeasible'}" if targets else ""))
        else:
            log(f"trial {t.number}: {shown}: {_outcome(t)}")

    while len(_counted(study)) < options.n_trials:
        t = run_trial()
        if t.user_attrs.get("surplus"):
            break
        report_line(t)
    measured = {name: measure_reference(name, ref, out, objectives, options, measure, log)
                for name, ref in references.items()}
    return write_report(study, objectives, targets, options, out, base, trial_config, log, measured)


BUDGET_KEYS = ("data.root", "data.limit_train", "data.limit_test", "data.split_seed", "data.image_size",
               "train.epochs", "train.seed")


def budget_overrides(base: Config) -> list[str]:
    """The base config's data and epochs (after --set), for a --reference: the same images and training length."""
    out = []
    for key in BUDGET_KEYS:
        section, name = key.split(".")
        out.append(_override(key, getattr(getattr(base, section), name)))
    return out


def reference_name(config: str) -> str:
    """The label of a --reference: the config's file stem (``cifar10_rn18_3_robust``)."""
    return Path(config).stem


def measure_reference(name: str, cfg: Config, out: Path, objectives: list[Objective], options: TuneOptions,
                      measure: Any, log: Any) -> dict[str, Any]:
    """A --reference config at the study's budget, trained and attacked like a trial, once.

    Its run and figures live in OUT/references/NAME-<fingerprint>, the fingerprint covering the resolved
    config and everything that scores it (objectives, attackers, seed), so a rerun with other settings
    measures it again instead of reusing old figures. Returns ``{"values", "n_val"}``, or ``{"error": why}``
    when it failed or another process of the study holds it: the report says so, the study is kept."""
    import hashlib
    import json

    from .lock import FolderLock
    from .rundir import write_json

    cfg = apply_overrides(cfg, [f"data.val_fraction={options.val_fraction}", f"train.device={options.device}"])
    scoring = {"config": cfg.to_dict(), "objectives": [o.name for o in objectives], "families": list(options.families),
               "attack_epochs": options.attack_epochs, "seed": options.seed}
    digest = hashlib.sha256(json.dumps(scoring, sort_keys=True, default=str).encode()).hexdigest()[:10]
    run_dir = out / "references" / f"{name}-{digest}"
    saved = run_dir / "figures.json"
    if not saved.is_file():
        lock = FolderLock(out / "references" / f".{name}-{digest}.lock", "reference")
        try:
            lock.acquire()
        except ConfigError as e:
            if not saved.is_file():
                log(f"reference {name}: not measured by this process: {e}")
                return {"error": f"held by another process ({lock.path})"}
        else:
            try:
                if not saved.is_file():
                    log(f"reference {name}: training and attacking it at the study's budget ({cfg.train.epochs} "
                        f"epoch(s)) in {run_dir}")
                    values, n = measure(cfg, run_dir, [], resume=RunDir(run_dir).is_run())
                    write_json(saved, {"n_val": n, **dict(zip((o.name for o in objectives), values)), **scoring})
            except (PrivsplitError, TrainingDiverged) as e:
                log(f"reference {name}: failed: {e}")
                return {"error": f"failed: {' '.join(str(e).split())[:200]}"}
            finally:
                lock.release()
    named = json.loads(saved.read_text())
    values = [float(named[o.name]) for o in objectives]
    log(f"reference {name}: " + ", ".join(f"{o.name} {100 * v:.1f}%" for o, v in zip(objectives, values)))
    return {"values": values, "n_val": int(named["n_val"]), "epochs": cfg.train.epochs}


def _se(share: float, n: int) -> float:
    return math.sqrt(max(share * (1 - share), 0.0) / max(n, 1))


def matches(trial: Any, reference: dict[str, Any], objectives: list[Objective]) -> bool:
    """Whether a trial is not worse than a reference on any objective by more than one standard error of their
    difference, each figure taken as a binomial share of the validation images, the two as independent:
    sqrt(se_trial^2 + se_reference^2). A rough scale, not a test: both are measured on the same images, and
    a privacy figure is the best of several attackers."""
    n_t, n_r = int(trial.user_attrs.get("n_val", reference["n_val"])), reference["n_val"]
    for o, t, r in zip(objectives, trial.values, reference["values"]):
        slack = math.hypot(_se(t, n_t), _se(r, n_r))
        if (t < r - slack) if o.maximise else (t > r + slack):
            return False
    return True


def reference_lines(references: dict[str, dict[str, Any]], complete: list[Any], pareto: set[int],
                    objectives: list[Objective], options: TuneOptions) -> list[str]:
    """The references' table: each one's figures at the study's budget and the Pareto trials that match it."""
    if not references:
        return ["Reference configs: none measured (--reference CONFIG trains and attacks one at this study's "
                "budget, for comparison; their points at other budgets are in benchmarks/RESULTS.md)."]
    lines = ["## References at the study's budget", "",
             "Each reference config trained and attacked like a trial: its own settings, with the study's data "
             f"({', '.join(BUDGET_KEYS)}) and validation split. 'matched by': Pareto trials not worse on any "
             "objective by more than one standard error of the difference (binomial shares of the validation "
             "images, taken as independent: a rough scale, not a test).", "",
             "| reference | " + " | ".join(o.name for o in objectives) + " | matched by |",
             "|---|" + "---|" * (len(objectives) + 1)]
    for name, ref in references.items():
        if "error" in ref:
            lines.append(f"| {name} | " + " | ".join("-" for _ in objectives) + f" | not measured: {ref['error']} |")
            continue
        by = [t.number for t in complete if t.number in pareto and matches(t, ref, objectives)]
        lines.append(f"| {name} | " + " | ".join(f"{100 * v:.2f}%" for v in ref["values"]) + " | "
                     + (", ".join(f"trial {n}" for n in by) or "**none**") + " |")
    return lines


def _outcome(t: Any) -> str:
    """``failed: <why>`` or ``pruned: <why>``, in one line."""
    why = t.user_attrs.get("prune_reason") or t.user_attrs.get("fail_reason") or "no reason recorded"
    return f"{'pruned' if t.state.name == 'PRUNED' else 'failed'}: {why}"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_report(study: Any, objectives: list[Objective], targets: list[tuple[str, str, float]],
                 options: TuneOptions, out: Path, base: Config, trial_config: Any, log: Any,
                 references: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    pareto = {t.number for t in study.best_trials} if complete else set()
    feasible = [t for t in complete if _feasible(t.values, objectives, targets)]
    ui = next(i for i, o in enumerate(objectives) if o.maximise)
    best = max(feasible, key=lambda t: t.values[ui], default=None)
    keys = list(options.space)
    lines = ["# privsplit tune: the privacy-utility frontier", "",
             f"Study {options.study_name!r}: {len(complete)} trial(s) measured on a validation split "
             f"(data.val_fraction {options.val_fraction:g} of the training images; the test split is not read), "
             f"attackers {','.join(options.families)} for {options.attack_epochs} epoch(s). "
             f"Targets: {', '.join(options.targets) or 'none'}. * = Pareto-optimal.", "",
             "| trial | pareto | " + " | ".join(keys) + " | " + " | ".join(o.name for o in objectives) + " | feasible |",
             "|---|---|" + "---|" * (len(keys) + len(objectives) + 1)]
    for t in sorted(complete, key=lambda t: -t.values[ui]):
        lines.append(f"| {t.number} | {'*' if t.number in pareto else ''} | "
                     + " | ".join(_fmt(t.params.get(k)) for k in keys) + " | "
                     + " | ".join(f"{100 * v:.2f}%" for v in t.values) + f" | {'yes' if t in feasible else 'no'} |")
    others = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED))
    for t in others:
        if not t.user_attrs.get("surplus"):
            lines.append(f"\ntrial {t.number} {_outcome(t)}")
    lines += ["", *reference_lines(references or {}, complete, pareto, objectives, options), ""]
    if _plot(complete, pareto, objectives, out / "frontier.png", references or {}):
        lines.append("![frontier](frontier.png)")
    result: dict[str, Any] = {"feasible": best is not None, "trials": len(complete), "best": None}
    if best is not None:
        cfg = trial_config(best.params, base.data.val_fraction)  # best.yaml trains on the whole training split
        cfg.name = f"tuned-trial-{best.number}"
        cfg.save(out / "best.yaml")
        result["best"] = {"number": best.number, "params": best.params,
                          "values": dict(zip((o.name for o in objectives), best.values))}
        lines += ["", f"Chosen: trial {best.number} ({', '.join(f'{k}={_fmt(v)}' for k, v in best.params.items())}), "
                  f"written to best.yaml (privsplit train --config {out / 'best.yaml'})."]
        if options.confirm:
            result["confirm"] = confirm(cfg, best, objectives, options, out, log)
            lines.append(f"\nConfirmed on the test split: {result['confirm']['text']}")
    else:
        closest = sorted(complete, key=lambda t: _shortfall(t.values, objectives, targets))[:3]
        result["closest"] = [{"number": t.number, "params": t.params,
                              "values": dict(zip((o.name for o in objectives), t.values))} for t in closest]
        lines += ["", f"No trial meets {', '.join(options.targets)}; closest: "
                  + "; ".join(f"trial {c['number']} " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in c['values'].items())
                              for c in result["closest"])]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return result


def confirm(cfg: Config, best: Any, objectives: list[Objective], options: TuneOptions, out: Path, log: Any) -> dict:
    """Retrain the chosen config on the whole training split and evaluate it once on the test split."""
    from .attacks import AttackOptions
    from .evaluate import EvalOptions, evaluate_run
    from .train.engine import train

    run_dir = out / "confirm"
    train(cfg, run_dir, resume=RunDir(run_dir).is_run(), progress=options.progress, log=lambda _m: None)
    attack = AttackOptions(epochs=options.attack_epochs, families=tuple(options.families), seed=options.seed,
                           queries=tuple(sorted({o.queries for o in objectives if o.queries} | {1})))
    res = evaluate_run(run_dir, EvalOptions(attacks=("attribute",), attack=attack, seed=options.seed,
                                            latency_repeats=0, device=options.device, log=lambda _m: None))
    test = trial_figures(res, objectives)
    text = ", ".join(f"{o.name} {100 * t:.1f}% (validation {100 * v:.1f}%, {100 * (t - v):+.1f})"
                     for o, t, v in zip(objectives, test, best.values))
    log(f"confirmed on the test split: {text}")
    return {"values": dict(zip((o.name for o in objectives), test)), "text": text}


def _plot(trials: list[Any], pareto: set[int], objectives: list[Objective], path: Path,
          references: dict[str, dict[str, Any]]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    privacy = [i for i, o in enumerate(objectives) if not o.maximise]
    ui = next(i for i, o in enumerate(objectives) if o.maximise)
    if not trials or not privacy:
        return False
    fig, axes = plt.subplots(1, len(privacy), figsize=(5 * len(privacy), 4), squeeze=False)
    for ax, i in zip(axes[0], privacy):
        for t in trials:
            on = t.number in pareto
            ax.scatter(100 * t.values[i], 100 * t.values[ui], c="tab:red" if on else "tab:grey", marker="*" if on else "o")
            ax.annotate(str(t.number), (100 * t.values[i], 100 * t.values[ui]), fontsize=7)
        for name, ref in references.items():
            if "values" in ref:
                point = (100 * ref["values"][i], 100 * ref["values"][ui])
                ax.scatter(*point, c="black", marker="^")
                ax.annotate(name, point, fontsize=7)
        ax.set_xlabel(f"{objectives[i].name} (%), lower is better")
        ax.set_ylabel("utility (%)")
        ax.grid(alpha=0.3)
    fig.suptitle("privsplit tune: trials (red stars: Pareto-optimal; black triangles: references)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
