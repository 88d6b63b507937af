"""Results to files: ``results.json`` (every number, with config and seeds),
``report.md`` (for people: chance levels, one verdict line per attack,
warnings) and plots (training curves, privacy vs utility)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .train.checkpoint import write_json, write_text


def _jsonable(x: Any) -> Any:
    """JSON has no infinity: PSNR of identical images is written as the string "inf"."""
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else None)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items() if k != "lpips_module"}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def to_json(x: Any) -> str:
    """Strict JSON (no NaN or Infinity: ``"inf"`` and null instead), for ``--json`` and scripts."""
    return json.dumps(_jsonable(x), indent=2, default=str, allow_nan=False)


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _num(x: float | None, fmt: str = "{:.4f}") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return fmt.format(x)


def _q_words(q: str) -> str:
    return f"{q} quer{'y' if q == '1' else 'ies'}"


def attribute_worst(a: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The number of queries at which the attribute attackers did best, and that result
    (the verdict is this one's: the worst case over the numbers of queries measured)."""
    by = _by_queries(a)
    q = max(by, key=lambda k: by[k]["accuracy"])
    return q, by[q]


def attribute_verdict(a: dict[str, Any]) -> str:
    """``leaks`` or ``at chance``: the worst over the numbers of queries (results written
    before this was so carry the one-query verdict; it is recomputed from them)."""
    by = _by_queries(a)
    return "leaks" if any(v["verdict"] == "leaks" for v in by.values()) else by["1"]["verdict"]


def image_verdict(a: dict[str, Any]) -> str:
    """An image attack's verdict, the worst over the numbers of queries."""
    by = _by_queries(a)
    return "reconstructs" if any(v["verdict"] == "reconstructs" for v in by.values()) else by["1"]["verdict"]


def _image_worst_text(a: dict[str, Any]) -> str:
    qs = distinct_queries(a)
    if len(qs) < 2:
        return ""
    hits = [q for q, v in qs.items() if v["verdict"] == "reconstructs"]
    return f" (the worst over {', '.join(qs)} queries" + (f"; reconstructs at {', '.join(hits)}" if hits else "") + ")"


def verdict_lines(r: dict[str, Any]) -> list[str]:
    """One line per attack: what it reached beside its chance level. The verdict is
    the worst over the numbers of queries measured."""
    lines = []
    a = r["attacks"].get("attribute")
    if a:
        qs = distinct_queries(a)
        wq, w = attribute_worst({**a, "by_queries": qs}) if len(qs) > 1 else ("1", a)
        if len(qs) > 1 and wq != "1":
            text = (f"{pct(a['accuracy'])} at 1 query, worst {pct(w['accuracy'])} at {_q_words(wq)}, vs chance "
                    f"{pct(a['chance'])} -> {attribute_verdict(a)} (the worst over {', '.join(qs)} queries; best family "
                    f"at {wq}: {w['best_family']})")
        else:
            over = f"; the worst over {', '.join(qs)} queries" if len(qs) > 1 else ""
            text = (f"{pct(a['accuracy'])} vs chance {pct(a['chance'])} -> {attribute_verdict(a)}"
                    f" (best family: {a['best_family']}{over})")
        lines.append(f"attribute attack ({a['target']}): {text}")
    rec = r["attacks"].get("reconstruction")
    if rec:
        m, b = rec["metrics"], rec["mean_image_baseline"]
        lines.append(
            f"reconstruction attack: SSIM {m['ssim']:.3f} vs mean image {b['ssim']:.3f}, "
            f"PSNR {_num(m['psnr'], '{:.2f}')} vs {_num(b['psnr'], '{:.2f}')} dB (1 query) -> {image_verdict(rec)}"
            + _image_worst_text(rec)
        )
    for _, a in image_attacks(r):
        m, b = a["metrics"], a["mean_image_baseline"]
        lines.append(f"{a['label']}: SSIM {m['ssim']:.3f} vs mean image {b['ssim']:.3f}, "
                     f"PSNR {_num(m['psnr'], '{:.2f}')} vs {_num(b['psnr'], '{:.2f}')} dB (1 query) -> {image_verdict(a)}"
                     + _image_worst_text(a))
    worst = r.get("reconstruction_privacy", {}).get("1")
    if worst and len([n for n, a in r["attacks"].items() if "mean_image_baseline" in a]) > 1:
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


def image_attacks(r: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The image reconstruction attacks other than the decoder (inversion, model-space, ...):
    results with a mean-image baseline and a label."""
    return [(n, a) for n, a in r["attacks"].items() if n != "reconstruction" and "mean_image_baseline" in a and "label" in a]


# The image metrics in the order the tables give them, with their number format.
IMAGE_METRICS = (("mse", "MSE", "{:.2f}"), ("l1", "L1", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"), ("ms_ssim", "MS-SSIM", "{:.4f}"),
                 ("psnr", "PSNR", "{:.2f}"), ("lpips", "LPIPS", "{:.4f}"), ("st_lpips", "ST-LPIPS", "{:.4f}"))


def _worst_text(worst: dict[str, dict[str, Any]]) -> str:
    return ", ".join(f"{label} {_num(worst[k]['value'], fmt)} ({worst[k]['attacker']})"
                     for k, label, fmt in IMAGE_METRICS if k in worst)


def worst_case_markdown(r: dict[str, Any]) -> list[str]:
    """The reconstruction privacy table: per number of queries and metric, the best attacker's value and its name."""
    worst = r.get("reconstruction_privacy") or {}
    if not worst:
        return []
    metrics = [(k, label, fmt) for k, label, fmt in IMAGE_METRICS if any(k in w for w in worst.values())]
    md = ["", "## Reconstruction privacy: the worst case over attackers", "",
          "At each number of queries and for each metric, the closest any reconstruction attack came "
          f"({', '.join(n for n, a in r['attacks'].items() if 'mean_image_baseline' in a)}), and which one.", "",
          "| queries | " + " | ".join(label for _, label, _ in metrics) + " |", "|---|" + "---|" * len(metrics)]
    for q, w in worst.items():
        md.append(f"| {q} | " + " | ".join(f"{_num(w[k]['value'], fmt)} ({w[k]['attacker']})" if k in w else "n/a"
                                           for k, _, fmt in metrics) + " |")
    return md


def image_attack_markdown(name: str, a: dict[str, Any]) -> list[str]:
    """One optimisation attack's section: every metric at each number of queries beside the mean image."""
    by = distinct_queries(a)
    b = a["mean_image_baseline"]
    md = ["", f"## {a['label'][0].upper() + a['label'][1:]} (`{name}`)", "", f"Assumes {a['assumes']}.", "",
          "| metric | " + " | ".join(f"{q} quer{'y' if q == '1' else 'ies'}" for q in by) + " | mean training image (no z) |",
          "|---|" + "---|" * (len(by) + 1)]
    for k, label, fmt in IMAGE_METRICS:
        md.append(f"| {label} | " + " | ".join(_num(v["metrics"].get(k), fmt) for v in by.values()) + f" | {_num(b.get(k), fmt)} |")
    st = a["settings"]
    md += ["", f"- {a['note']}",
           f"- Adam, at most {st['steps']} steps per batch of {st['batch_size']} images, lr {st['lr']:g}, TV weight "
           f"{st['tv_weight']:g}; {st['stop']}; steps run: "
           + "; ".join(f"{q}: {', '.join(map(str, v['steps_run']))}" for q, v in by.items())]
    if a.get("grid"):
        md += ["", f"![originals (top) and reconstructions (bottom)]({a['grid']})"]
    return md


def _by_queries(a: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """An attack's results per number of queries (older results: one query only)."""
    return a.get("by_queries") or {"1": a}


def _at(q: str, several: bool) -> str:
    return f" at {q} quer{'y' if q == '1' else 'ies'}" if several else ""


def _attempts(f: dict[str, Any]) -> str:
    """How an attacker's best was found: its epoch, or its k for k-NN."""
    if "ks" in f:
        return f"best of k in {', '.join(map(str, f['ks']))} (k = {f['best_k']})"
    return f"best of {len(f['test_acc'])} epochs (epoch {f['best_epoch']})"


def distinct_queries(a: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per number of queries, skipping those that repeat the one-query result (a
    deterministic client, or consistent randomness, computes it once)."""
    by = _by_queries(a)
    return {q: v for q, v in by.items() if q == "1" or v != by["1"]}


def warnings(r: dict[str, Any]) -> list[str]:
    """Weak-evaluation warnings: attackers that had not converged."""
    out = []
    a = r["attacks"].get("attribute")
    if a:
        qs = distinct_queries(a)
        for q, res in qs.items():
            for fam in res["not_converged"]:
                losses = res["families"][fam]["train_loss"]
                out.append(
                    f"attribute attacker {fam!r}{_at(q, len(qs) > 1)} had not converged (training loss still falling at epoch {len(losses)}: "
                    f"{_num(losses[-1])} after {_num(min(losses[:-1]) if len(losses) > 1 else None)}, and test accuracy best at "
                    f"the last epoch); an under-trained "
                    "attacker overstates privacy: rerun with more --attack-epochs"
                )
    rec = r["attacks"].get("reconstruction")
    if rec:
        qs = distinct_queries(rec)
        for q, res in qs.items():
            if not res["converged"]:
                out.append(
                    f"reconstruction decoder{_at(q, len(qs) > 1)} had not converged (training loss still falling at epoch "
                    f"{len(res['train_loss'])}, and test MSE lowest at the last epoch); rerun with more --attack-epochs"
                )
    for _, a in image_attacks(r):
        qs = distinct_queries(a)
        for q, res in qs.items():
            if not res["converged"]:
                out.append(f"{a['label']}{_at(q, len(qs) > 1)} used every step ({a['settings']['steps']}) with its objective "
                           "still falling; rerun with more --inversion-steps")
    return out


def privacy_by_queries_line(r: dict[str, Any]) -> str | None:
    """``privacy by queries: 1: 22.1%, 16: 30.2%, inf: 41.0%`` (None without an attribute attack)."""
    a = r["attacks"].get("attribute")
    if not a or not r.get("privacy_by_queries"):
        return None
    text = ", ".join(f"{q}: {pct(v)}" for q, v in r["privacy_by_queries"].items())
    return f"privacy by queries: {text} ({a.get('queries_note', '')})"


def summary_lines(r: dict[str, Any]) -> list[str]:
    """A few lines for the terminal."""
    lines = [f"evaluated {r['run']} ({r['n_train']} train / {r['n_test']} test images, z {tuple(r['z_shape'])})"]
    for name, h in r["heads"].items():
        lines.append(f"  utility: head {name} ({h['target']}) {pct(h['accuracy'])} (chance {pct(h['chance'])})"
                     + (" -- NOT LEARNED: not above chance" if h.get("learned") is False else ""))
    a = r["attacks"].get("attribute")
    if a:
        for fam, f in a["families"].items():
            lines.append(f"  attribute attacker {fam}: {pct(f['best_acc'])}, {_attempts(f)}"
                         f"{'' if f['converged'] else ' (NOT CONVERGED)'}")
        lines.append(f"  privacy {pct(r['privacy'])} (chance {pct(r['privacy_chance'])}); delta = utility - privacy = "
                     f"{100 * r['delta']:+.2f} points"
                     + (" -- meaningless: the model has not learned its task" if not_learned(r) else ""))
        line = privacy_by_queries_line(r)
        if line:
            lines.append(f"  {line}")
        for g in r.get("proxy_gap") or []:
            if g["fresh"] is not None:
                lines.append(f"  proxy adversary {g['adversary']} ({g['family']}, {g['queries']} quer(ies)): {pct(g['proxy'])} "
                             f"in training, fresh attackers {pct(g['fresh'])} on the same view")
    rec = r["attacks"].get("reconstruction")
    if rec:
        m = rec["metrics"]
        lines.append(f"  reconstruction: MSE {m['mse']:.1f}, L1 {m['l1']:.2f} (0-255), SSIM {m['ssim']:.3f}, "
                     f"MS-SSIM {_num(m['ms_ssim'], '{:.3f}')}, PSNR {_num(m['psnr'], '{:.2f}')} dB, LPIPS {_num(m['lpips'], '{:.3f}')}, "
                     f"ST-LPIPS {_num(m.get('st_lpips'), '{:.3f}')}")
    for _, a in image_attacks(r):
        m = a["metrics"]
        lines.append(f"  {a['label']}: " + ", ".join(f"{label} {_num(m[k], fmt)}" for k, label, fmt in IMAGE_METRICS
                                                     if m.get(k) is not None))
    worst = r.get("reconstruction_privacy") or {}
    if len([n for n, a in r["attacks"].items() if "mean_image_baseline" in a]) > 1:
        for q, w in worst.items():
            lines.append(f"  reconstruction privacy at {q} quer{'y' if q == '1' else 'ies'} (worst case): {_worst_text(w)}")
    c = r["cost"]
    lat = c["latency_ms_cpu_batch1"]
    lines.append(f"  client: {c['gflops']:.3f} GFLOPs, {c['memory_mb']:.2f} MB, {c['bytes_per_sample_float32']} bytes/sample "
                 f"(float32), latency {_num(lat, '{:.2f}')} ms (CPU, batch 1)")
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
    md += ["## Utility and privacy", "", "| measure | test accuracy | chance |", "|---|---|---|"]
    for name, h in r["heads"].items():
        md.append(f"| utility: head `{name}` ({h['target']}) | {pct(h['accuracy'])} | {pct(h['chance'])} |")
    a = r["attacks"].get("attribute")
    if a:
        for fam, f in a["families"].items():
            flag = "" if f["converged"] else " (not converged)"
            md.append(f"| attacker `{fam}` on {a['target']}, {_attempts(f)}{flag} "
                      f"| {pct(f['best_acc'])} | {pct(a['chance'])} |")
        for other, v in a.get("chance_given", {}).items():
            md.append(f"| no z, knowing the true {other} label: its most common {a['target']} class | {pct(v)} | |")
        md.append(f"| **privacy** = best attacker | **{pct(a['accuracy'])}** | {pct(a['chance'])} |")
        md.append(f"| **delta** = utility - privacy | **{100 * r['delta']:+.2f} points**"
                  + (" (meaningless: the model has not learned its task)" if not_learned(r) else "") + " | |")
        md += ["", f"Attackers: Adam lr {a['lr']}, batch {a['batch_size']}, {a['epochs']} epochs, seed {a['seed']}, "
               f"{'fresh obfuscator draws every epoch' if a.get('fresh_draws') else 'one fixed draw of z'}"
               f"{', z mirrored at random (augmentation)' if a.get('augment') else ''}; "
               f"'leaks' means above {pct(a['leak_threshold'])} (chance + max(1 point, 3 standard errors))."]
        md += queries_markdown(r)
        md += proxy_gap_markdown(r)
    rec = r["attacks"].get("reconstruction")
    if rec:
        m, b = rec["metrics"], rec["mean_image_baseline"]
        md += ["", "## Reconstruction", "",
               "| metric | decoder | mean training image (no z) |", "|---|---|---|",
               f"| MSE (0-255) | {m['mse']:.2f} | {b['mse']:.2f} |",
               f"| L1 (0-255) | {m['l1']:.2f} | {b['l1']:.2f} |",
               f"| SSIM | {m['ssim']:.4f} | {b['ssim']:.4f} |",
               f"| MS-SSIM | {_num(m['ms_ssim'])} | {_num(b['ms_ssim'])} |",
               f"| PSNR (dB, range 255) | {_num(m['psnr'], '{:.2f}')} | {_num(b['psnr'], '{:.2f}')} |",
               f"| LPIPS | {_num(m['lpips'])} | {_num(b['lpips'])} |",
               f"| ST-LPIPS (shift-tolerant, not comparable to LPIPS) | {_num(m.get('st_lpips'))} | "
               f"{_num(b.get('st_lpips'))} |", ""]
        md += [f"- {k}: {v}" for k, v in m["notes"].items()]
        best = (f"input normalised, scored at its best epoch ({rec['best_epoch']}, lowest test MSE); "
                if "best_epoch" in rec else "")  # results written before the attacker had both
        md += [f"- decoder: {rec['epochs']} epochs, Adam lr {rec['lr']}, MSE loss; {best}final "
               f"training MSE {_num(rec['train_loss'][-1] if rec['train_loss'] else None)} (0-1 scale)"]
        if rec.get("grid"):
            md += ["", f"![originals (top) and reconstructions (bottom)]({rec['grid']})"]
    for name, a in image_attacks(r):
        md += image_attack_markdown(name, a)
    md += worst_case_markdown(r)
    c = r["cost"]
    md += ["", "## Client cost (obfuscator)", "", "| GFLOPs | memory (MB) | bytes/sample float32 | float16 | image uint8 | "
           "CPU latency, batch 1 |", "|---|---|---|---|---|---|",
           f"| {c['gflops']:.3f} | {c['memory_mb']:.2f} | {c['bytes_per_sample_float32']} | {c['bytes_per_sample_float16']} | "
           f"{c['image_bytes_uint8']} | {_num(c['latency_ms_cpu_batch1'], '{:.2f}')} ms ({c['latency_threads']} threads) |",
           "", f"FLOPs: {c['counting']}."]
    if (Path(r.get("_out", ".")) / "training_curves.png").exists():
        md += ["", "![training curves](training_curves.png)"]
    return "\n".join(md) + "\n"


def proxy_gap_markdown(r: dict[str, Any]) -> list[str]:
    """The proxy adversaries' last training figure beside the fresh attackers' on the same view."""
    rows = r.get("proxy_gap") or []
    if not rows:
        return []
    md = ["", "### Proxy adversaries against fresh attackers", "",
          "How much the obfuscator fooled its proxy: the proxy's test accuracy in the last training epoch, "
          "and the best fresh attacker's on what the proxy saw.", "",
          "| proxy adversary | family | sees (queries) | proxy in training | fresh attackers | gap |", "|---|---|---|---|---|---|"]
    for g in rows:
        fresh = f"{pct(g['fresh'])} ({g['fresh_family']})" if g["fresh"] is not None else "not attacked at this view"
        gap = f"{100 * (g['fresh'] - g['proxy']):+.2f} points" if g["fresh"] is not None else "–"
        md.append(f"| `{g['adversary']}` | {g['family']} | {g['queries']} | {pct(g['proxy'])} | {fresh} | {gap} |")
    return md


def queries_markdown(r: dict[str, Any]) -> list[str]:
    """The privacy-vs-queries table of one run."""
    a = r["attacks"]["attribute"]
    by = _by_queries(a)
    rec = r["attacks"].get("reconstruction")
    rec_by = _by_queries(rec) if rec else {}
    md = ["", "## Repeated queries", "", f"{a.get('queries_note', '')}.", "",
          "| queries | privacy (best attacker) | family | delta | reconstruction SSIM |", "|---|---|---|---|---|"]
    for q, res in by.items():
        ssim = rec_by[q]["metrics"]["ssim"] if q in rec_by else None
        md.append(f"| {q} | {pct(res['accuracy'])} | {res['best_family']} | {delta_text(r, r['utility'] - res['accuracy'])} | "
                  f"{_num(ssim, '{:.3f}')} |")
    if (Path(r.get("_out", ".")) / "privacy_queries.png").exists():
        md += ["", "![privacy vs queries](privacy_queries.png)"]
    return md


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
    given = {(k, v) for r in rows for k, v in r["attacks"]["attribute"].get("chance_given", {}).items()}
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


def _read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def _pyplot():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(run_dir: Path, results: dict[str, Any], path: Path) -> Path | None:
    """Training losses and test accuracies per epoch (metrics.jsonl), and the
    attackers' test accuracy per epoch."""
    rows = _read_metrics(run_dir)
    a = results["attacks"].get("attribute")
    if not rows and not a:
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
    if a:
        for fam, f in a["families"].items():
            if "ks" in f:  # k-NN has no epochs
                continue
            axes[2].plot(range(1, len(f["test_acc"]) + 1), [100 * v for v in f["test_acc"]], marker="o", label=f"attacker {fam}")
        axes[2].axhline(100 * a["chance"], color="grey", ls="--", label="chance")
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
    a = results["attacks"].get("attribute")
    if a and len(distinct_queries(a)) > 1:
        plot_privacy_queries([results], out / "privacy_queries.png")
    write_json(out / "results.json", _jsonable(results))
    write_text(out / "report.md", run_markdown({**results, "_out": str(out)}))


def comparison_markdown(results: list[dict[str, Any]]) -> str:
    md = ["# Comparison", "", "| run | method | split | utility (chance) | privacy (chance) | privacy by queries | delta | "
          "recon SSIM | recon PSNR | GFLOPs | MB | bytes/sample | verdicts |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        cfg = r["config"]
        rec = r["attacks"].get("reconstruction")
        a = r["attacks"].get("attribute")
        verdicts = "; ".join(x for x in [
            f"attribute {attribute_verdict(a)}" if a else "", f"reconstruction {image_verdict(rec)}" if rec else "",
            "task not learned" if not_learned(r) else ""] if x)
        flag = " (attacker not converged)" if warnings(r) else ""
        md.append(
            f"| {r['name']} | {cfg['method']} | {cfg['model']['split']} | {pct(r['utility'])} ({pct(r['utility_chance'])}) | "
            f"{pct(r['privacy'])} ({pct(r['privacy_chance'])}) | "
            f"{', '.join(f'{q}: {pct(v)}' for q, v in r.get('privacy_by_queries', {}).items()) or 'n/a'} | "
            f"{delta_text(r)} | "
            f"{_num(rec['metrics']['ssim'], '{:.3f}') if rec else 'n/a'} | "
            f"{_num(rec['metrics']['psnr'], '{:.2f}') if rec else 'n/a'} | {r['cost']['gflops']:.3f} | "
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


def _split(r: dict[str, Any]) -> str:
    s = r["config"]["model"]["split"]
    return "image" if s == "none" else s


def _attackers(attr: dict[str, Any]) -> str:
    fams = attr["families"]
    others = ", ".join(f"{f} {pct(v['best_acc'])}" for f, v in fams.items() if f != attr["best_family"])
    return attr["best_family"] + (f" ({others})" if others else "")


def benchmark_markdown(results: list[dict[str, Any]], record: dict[str, Any], train_s: dict[str, float | None]) -> str:
    """``benchmark.md``: the paper's tables (privacy/utility, reconstruction, client
    cost, time) with chance levels and warnings; ``train_s``: training seconds per entry."""

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
        delta = delta_text(r)
        attr = r["attacks"].get("attribute")
        best = _attackers(attr) if attr else "n/a"
        by = r.get("privacy_by_queries", {})
        cells = "".join(f"{pct(by.get(q))} | " for q in qs)
        d16 = r.get("delta_by_queries", {}).get("16")
        md.append(f"| {r['name']} | {_split(r)} | {pct(r['privacy'])} | {best} | {cells}{pct(r['utility'])} | {delta} |"
                  + (f" {delta_text(r, d16)} |" if "16" in qs else ""))
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
