"""Results to files: ``results.json`` (every number, with config and seeds),
``report.md`` (for people: chance levels, one verdict line per attack,
warnings) and plots (training curves, privacy vs utility).

Nothing here names an attack: each attack's result (:mod:`privsplit.attacks.result`)
renders its own verdict, summary, warnings and sections; this module lays out the
run-level parts (utility, privacy, delta, the worst case over reconstructions,
client cost) and puts the results' parts in order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .attacks.base import privacy_result, result_type, results_of
from .attacks.result import AttackResult
from .formatting import IMAGE_METRICS, jsonable, num, pct, queries_words, to_json  # noqa: F401  (re-exported)
from .rundir import RunDir, write_json, write_text

# Older names, still imported by scripts.
_jsonable = jsonable
_num = num
_q_words = queries_words


def attribute_verdict(a: dict[str, Any]) -> str:
    """``leaks`` or ``at chance``: the worst over the numbers of queries (results written
    before this was so carry the one-query verdict; it is recomputed from them)."""
    return result_type("attribute")("attribute", a).verdict()


def distinct_queries(a: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """An attack's results per number of queries, skipping those that repeat the one-query result."""
    return AttackResult("", a).distinct_queries()


def _reconstructions(r: dict[str, Any]) -> list[AttackResult]:
    return [res for res in results_of(r) if res.role == "reconstruction"]


def verdict_lines(r: dict[str, Any]) -> list[str]:
    """One line per attack: what it reached beside its chance level. The verdict is
    the worst over the numbers of queries measured."""
    lines = [line for res in results_of(r) if (line := res.verdict_line(r))]
    worst = r.get("reconstruction_privacy", {}).get("1")
    if worst and len(_reconstructions(r)) > 1:
        lines.append("reconstruction privacy (worst case over attackers, 1 query): " + _worst_text(worst))
    if not_learned(r):
        lines.append(not_learned_text(r))
    return lines


def not_learned(r: dict[str, Any]) -> bool:
    """The model has not learned its task: utility is not above its chance level
    (results written before the flag existed: at or below chance)."""
    if r.get("task_learned") is not None:
        return not r["task_learned"]
    return r.get("utility") is not None and r.get("utility_chance") is not None and r["utility"] <= r["utility_chance"]


def not_learned_text(r: dict[str, Any]) -> str:
    return (f"the model has not learned its task: utility {pct(r['utility'])} is not above its chance level "
            f"{pct(r['utility_chance'])}, so its privacy is that of a useless model and delta means nothing")


_RUN_DELTA = object()


def delta_text(r: dict[str, Any], delta: Any = _RUN_DELTA) -> str:
    """``+12.30`` (points; the run's delta by default), flagged when the model has not learned its task."""
    d = r.get("delta") if delta is _RUN_DELTA else delta
    if d is None:
        return "n/a"
    return f"{100 * d:+.2f}" + (" (task not learned)" if not_learned(r) else "")


def _worst_text(worst: dict[str, dict[str, Any]]) -> str:
    return ", ".join(f"{label} {num(worst[k]['value'], fmt)} ({worst[k]['attacker']})"
                     for k, label, fmt in IMAGE_METRICS if k in worst)


def worst_case_markdown(r: dict[str, Any]) -> list[str]:
    """The reconstruction privacy table: per number of queries and metric, the best attacker's value and its name."""
    worst = r.get("reconstruction_privacy") or {}
    if not worst:
        return []
    metrics = [(k, label, fmt) for k, label, fmt in IMAGE_METRICS if any(k in w for w in worst.values())]
    md = ["", "## Reconstruction privacy: the worst case over attackers", "",
          "At each number of queries and for each metric, the closest any reconstruction attack came "
          f"({', '.join(res.name for res in _reconstructions(r))}), and which one.", "",
          "| queries | " + " | ".join(label for _, label, _ in metrics) + " |", "|---|" + "---|" * len(metrics)]
    for q, w in worst.items():
        md.append(f"| {q} | " + " | ".join(f"{num(w[k]['value'], fmt)} ({w[k]['attacker']})" if k in w else "n/a"
                                           for k, _, fmt in metrics) + " |")
    return md


def image_attack_markdown(name: str, a: dict[str, Any]) -> list[str]:
    """One image attack's section of ``report.md`` (its result renders it)."""
    return result_type(name)(name, a).report_markdown({})


def warnings(r: dict[str, Any]) -> list[str]:
    """Weak-evaluation warnings: attackers that had not converged, from every result."""
    return [w for res in results_of(r) for w in res.warnings(r)]


def summary_lines(r: dict[str, Any]) -> list[str]:
    """A few lines for the terminal."""
    lines = [f"evaluated {r['run']} ({r['n_train']} train / {r['n_test']} test images, z {tuple(r['z_shape'])})"]
    for name, h in r["heads"].items():
        lines.append(f"  utility: head {name} ({h['target']}) {pct(h['accuracy'])} (chance {pct(h['chance'])})"
                     + (" -- NOT LEARNED: not above chance" if h.get("learned") is False else ""))
    lines += [f"  {line}" for res in results_of(r) for line in res.summary_lines(r)]
    if len(_reconstructions(r)) > 1:
        for q, w in (r.get("reconstruction_privacy") or {}).items():
            lines.append(f"  reconstruction privacy at {queries_words(q)} (worst case): {_worst_text(w)}")
    c = r["cost"]
    lat = c["latency_ms_cpu_batch1"]
    lines.append(f"  client: {c['gflops']:.3f} GFLOPs, {c['memory_mb']:.2f} MB, {c['bytes_per_sample_float32']} bytes/sample "
                 f"(float32), latency {num(lat, '{:.2f}')} ms (CPU, batch 1)")
    lines += [f"  verdict: {v}" for v in verdict_lines(r)]
    lines += [f"  WARNING: {w}" for w in warnings(r)]
    return lines


def run_markdown(r: dict[str, Any]) -> str:
    cfg = r["config"]
    chain = " -> ".join(
        f"{s['op']}(" + ", ".join(f"{k}={v}" for k, v in s.items() if k != "op") + ")" for s in cfg["reduction"]
    ) or "none"
    md = [
        f"# Evaluation of `{r['name']}`",
        "",
        f"- run: `{r['run']}`",
        f"- method `{cfg['method']}`, {cfg['model']['backbone']} split `{cfg['model']['split']}`, reduction {chain}",
        f"- data: {r['dataset']}, images {tuple(r['image_shape'])}, {r['n_train']} train / {r['n_test']} test"
        + (f" (overrides: {', '.join(r['data_overrides'])})" if r["data_overrides"] else ""),
        f"- z {tuple(r['z_shape'])}; seeds: {', '.join(f'{k} {v}' for k, v in r['seeds'].items())}",
        "- the obfuscator is frozen and run as deployed (random ops on"
        + (", consistent randomness: a repeated image sends the same z)" if r.get("consistent_randomness") else ")"),
        "",
        "## Verdicts",
        "",
        *[f"- {v}" for v in verdict_lines(r)],
        "",
    ]
    w = warnings(r)
    if w:
        md += ["## Warnings", "", *[f"- **{x}**" for x in w], ""]
    md += ["## Utility", "", "| measure | test accuracy | chance |", "|---|---|---|"]
    for name, h in r["heads"].items():
        md.append(f"| utility: head `{name}` ({h['target']}) | {pct(h['accuracy'])} | {pct(h['chance'])} |")
    for res in results_of(r):
        md += res.report_markdown(r)
    md += worst_case_markdown(r)
    c = r["cost"]
    md += ["", "## Client cost (obfuscator)", "", "| GFLOPs | memory (MB) | bytes/sample float32 | float16 | image uint8 | "
           "CPU latency, batch 1 |", "|---|---|---|---|---|---|",
           f"| {c['gflops']:.3f} | {c['memory_mb']:.2f} | {c['bytes_per_sample_float32']} | {c['bytes_per_sample_float16']} | "
           f"{c['image_bytes_uint8']} | {num(c['latency_ms_cpu_batch1'], '{:.2f}')} ms ({c['latency_threads']} threads) |",
           "", f"FLOPs: {c['counting']}."]
    if (Path(r.get("_out", ".")) / "training_curves.png").exists():
        md += ["", "![training curves](training_curves.png)"]
    return "\n".join(md) + "\n"


def plot_privacy_queries(results: list[dict[str, Any]], path: Path) -> Path | None:
    """Privacy (best attacker) against the number of repeated queries, one line per run;
    ``inf`` is drawn one step right of the largest finite number."""
    rows = [r for r in results if r.get("privacy_by_queries")]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    finite = sorted({int(q) for r in rows for q in r["privacy_by_queries"] if q != "inf"})
    inf_x = 4 * max(finite) if finite else 1
    for r in rows:
        pts = sorted((inf_x if q == "inf" else int(q), 100 * v) for q, v in r["privacy_by_queries"].items())
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=r["name"])
    ax.set_xscale("log", base=2)
    ticks = finite + (["inf"] if any("inf" in r["privacy_by_queries"] for r in rows) else [])
    ax.set_xticks([inf_x if t == "inf" else t for t in ticks], [str(t) for t in ticks])
    chances = {r["privacy_chance"] for r in rows if r.get("privacy_chance") is not None}
    if len(chances) == 1:
        ax.axhline(100 * chances.pop(), color="grey", ls="--", label="chance")
    given = {(k, v) for r in rows for k, v in (_privacy_record(r).get("chance_given") or {}).items()}
    if len(given) == 1:  # what any z that serves the task reveals
        other, v = given.pop()
        ax.axhline(100 * v, color="grey", ls=":", label=f"knowing the {other} label")
    ax.set(xlabel="repeated queries of each image averaged by the server", ylabel="best attacker accuracy (%)",
           title="privacy under repeated queries (lower is better)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _privacy_record(r: dict[str, Any]) -> dict[str, Any]:
    res = privacy_result(r)
    return res.record if res else {}


def _pyplot():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(run_dir: Path, results: dict[str, Any], path: Path) -> Path | None:
    """Training losses and test accuracies per epoch (metrics.jsonl), and the
    attackers' test accuracy per epoch."""
    rows = RunDir(run_dir).read_metrics()
    curves = [(res, curve) for res in results_of(results) for curve in res.attacker_curves()]
    if not rows and not curves:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    epochs = [m["epoch"] for m in rows]
    for k in sorted({k for m in rows for k in m if k.startswith("train/")}):
        axes[0].plot(epochs, [m.get(k, float("nan")) for m in rows], marker="o", label=k[6:])
    axes[0].set(title="training losses", xlabel="epoch")
    for k in sorted({k for m in rows for k in m if k.startswith("test/") and k.endswith("/acc")}):
        axes[1].plot(epochs, [100 * m.get(k, float("nan")) for m in rows], marker="o", label=k[5:])
    axes[1].set(title="test accuracy during training", xlabel="epoch", ylabel="%")
    for _, (label, accs) in curves:
        axes[2].plot(range(1, len(accs) + 1), [100 * v for v in accs], marker="o", label=label)
    chances = {res.chance() for res, _ in curves if res.chance() is not None}
    if len(chances) == 1:
        axes[2].axhline(100 * chances.pop(), color="grey", ls="--", label="chance")
    axes[2].set(title="attacker test accuracy (after training)", xlabel="attacker epoch", ylabel="%")
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_privacy_utility(results: list[dict[str, Any]], path: Path) -> Path:
    """Scatter: privacy (best attacker accuracy) against utility, one point per run.
    Each run has its own colour and marker and is named in the legend beside the
    axes (names written next to the points overlap where runs score alike)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    markers = "osD^vP*Xh<>p"
    colours = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]  # no grey: the chance lines are grey
    shown = [r for r in results if r.get("privacy") is not None]
    for i, r in enumerate(shown):  # 9 colours x 12 markers: every pair differs for up to 36 runs
        ax.scatter(100 * r["privacy"], 100 * r["utility"], marker=markers[i % len(markers)],
                   color=colours[i % len(colours)], s=46, alpha=0.85, edgecolors="black", linewidths=0.4,
                   label=r["name"], zorder=3)
    chances = {r["privacy_chance"] for r in shown if r.get("privacy_chance") is not None}
    if len(chances) == 1:
        ax.axvline(100 * chances.pop(), color="grey", ls="--", lw=0.8, label="privacy chance", zorder=1)
    u_chances = {r.get("utility_chance") for r in shown}
    if len(u_chances) == 1 and None not in u_chances:
        ax.axhline(100 * u_chances.pop(), color="grey", ls=":", lw=0.8, label="utility chance", zorder=1)
    ax.set(xlabel="privacy: best attacker accuracy (%)  (lower is better)", ylabel="utility: task accuracy (%)",
           title="privacy vs utility")
    ax.grid(alpha=0.3, zorder=0)
    if shown:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_run_report(results: dict[str, Any], out: Path, run_dir: Path) -> None:
    """``results.json``, ``report.md`` and ``training_curves.png`` for one run."""
    out.mkdir(parents=True, exist_ok=True)
    plot_training_curves(run_dir, results, out / "training_curves.png")
    res = privacy_result(results)
    if res and len(res.distinct_queries()) > 1:
        plot_privacy_queries([results], out / "privacy_queries.png")
    write_json(out / "results.json", _jsonable(results))
    write_text(out / "report.md", run_markdown({**results, "_out": str(out)}))


def comparison_markdown(results: list[dict[str, Any]]) -> str:
    md = ["# Comparison", "", "| run | method | split | utility (chance) | privacy (chance) | privacy by queries | delta | "
          "recon SSIM | recon PSNR | GFLOPs | MB | bytes/sample | verdicts |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        cfg = r["config"]
        closest = (r.get("reconstruction_privacy") or {}).get("1", {})  # the worst case over reconstructions
        verdicts = "; ".join([f"{res.name} {res.verdict()}" for res in results_of(r)]
                             + (["task not learned"] if not_learned(r) else []))
        flag = " (attacker not converged)" if warnings(r) else ""
        md.append(
            f"| {r['name']} | {cfg['method']} | {cfg['model']['split']} | {pct(r['utility'])} ({pct(r['utility_chance'])}) | "
            f"{pct(r['privacy'])} ({pct(r['privacy_chance'])}) | "
            f"{', '.join(f'{q}: {pct(v)}' for q, v in r.get('privacy_by_queries', {}).items()) or 'n/a'} | "
            f"{delta_text(r)} | "
            f"{num(closest.get('ssim', {}).get('value'), '{:.3f}')} | "
            f"{num(closest.get('psnr', {}).get('value'), '{:.2f}')} | {r['cost']['gflops']:.3f} | "
            f"{r['cost']['memory_mb']:.2f} | {r['cost']['bytes_per_sample_float32']} | {verdicts}{flag} |"
        )
    md += ["", "![privacy vs utility](privacy_utility.png)", ""]
    return "\n".join(md)


def write_comparison(results: list[dict[str, Any]], out: Path) -> None:
    """One table for several runs, their results, and the privacy-vs-utility scatter."""
    out.mkdir(parents=True, exist_ok=True)
    plot_privacy_utility(results, out / "privacy_utility.png")
    plot_privacy_queries(results, out / "privacy_queries.png")
    write_json(out / "results.json", _jsonable({"runs": results}))
    write_text(out / "comparison.md", comparison_markdown(results))


# --- the benchmark's tables -------------------------------------------------------------------------------------


def benchmark_markdown(results: list[dict[str, Any]], record: dict[str, Any], train_s: dict[str, float | None]) -> str:
    """``benchmark.md``: the paper's tables (each attack's, in the order they ran:
    privacy/utility, reconstruction, ...; client cost, time) with chance levels and
    warnings; ``train_s``: training seconds per entry."""

    dataset, settings = record["dataset"], record["settings"]
    md = [f"# Benchmark: {dataset}, budget `{record['budget']}`", "",
          f"- every method: {settings['epochs']} training epoch(s); data {', '.join(f'{k} {v}' for k, v in record['data'].items())}",
          f"- attackers trained after training on z: {settings['attack_epochs']} epoch(s), families "
          f"{', '.join(settings['families'])}, at {', '.join(settings.get('queries', ['1']))} quer(ies) of each image; "
          "privacy = the best attacker's test accuracy on the private label", ""]
    if not results:
        return "\n".join(md + ["No method has finished yet.", ""])
    by_attack: dict[str, list[tuple[dict[str, Any], AttackResult]]] = {}
    for r in results:
        for res in results_of(r):
            by_attack.setdefault(res.name, []).append((r, res))
    for rows in by_attack.values():
        md += type(rows[0][1]).benchmark_markdown(rows)
    md += ["## Client cost", "", "| method | GFLOPs | memory (MB) | bytes/sample (float32) | CPU latency, batch 1 (ms) |",
           "|---|---|---|---|---|"]
    for r in results:
        c = r["cost"]
        md.append(f"| {r['name']} | {c['gflops']:.3f} | {c['memory_mb']:.2f} | {c['bytes_per_sample_float32']} | "
                  f"{_num(c['latency_ms_cpu_batch1'], '{:.2f}')} |")
    md += ["", "## Time", "", "| method | training (s) | evaluation (s) |", "|---|---|---|"]
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
