"""Privacy under repeated queries on CIFAR-10 at budget ``small``: the "Repeated queries"
section of benchmarks/RESULTS.md.

Trains (or reuses) ours, ours hardened (configs/cifar10_rn18_3_robust.yaml), no_noise, maxent
and disco exactly as ``privsplit benchmark --budget small`` does, then attacks each with the
attribute attack at 1, 4, 16 and inf queries (head, mlp and knn attackers that own the
obfuscator: fresh draws every epoch; 10 attacker epochs), plus ours deployed with consistent
randomness (a device key). Prints one table and writes OUT/queries.md, OUT/results.json and OUT/privacy_queries.png.
Finished runs and evaluations in OUT are reused, so an interrupted run continues.

    python benchmarks/repeated_queries.py --data-root /tmp/privsplit-data [--out benchmarks/runs/cifar10-queries]

About 1 h 35 min on a 2-core CPU (measured: training ~40 min, the attacks ~55 min).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from privsplit.attacks import AttackOptions
from privsplit.benchmark import BUDGETS, ENTRIES, entry_config, train_entry
from privsplit.evaluate import EvalOptions, evaluate_run
from privsplit.report import _jsonable, pct, plot_privacy_queries

ROWS = ("ours_rn18_3", "ours_rn18_3_robust", "no_noise_rn18_3", "maxent", "disco")
QUERIES = (1, 4, 16, math.inf)
ATTACK_EPOCHS = 10  # twice the small budget's 5: at 5, some attackers of the noise-free limit had not converged


def evaluate(run_dir: Path, out: Path, data_root: str, consistent: bool) -> dict:
    if (out / "results.json").is_file():
        return json.loads((out / "results.json").read_text())
    options = EvalOptions(attacks=("attribute",), overrides=[f"data.root={data_root}"], consistent=consistent,
                          attack=AttackOptions(epochs=ATTACK_EPOCHS, queries=QUERIES),
                          latency_repeats=5, progress=False)
    return json.loads(json.dumps(_jsonable(evaluate_run(run_dir, options, out))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="folder holding CIFAR-10 (cifar10/train, cifar10/test)")
    p.add_argument("--out", default="benchmarks/runs/cifar10-queries", help="working folder")
    args = p.parse_args()
    out = Path(args.out)
    results = []
    for name in ROWS:
        entry = next(e for e in ENTRIES if e.name == name)
        cfg = entry_config(entry, "cifar10", BUDGETS["small"], data_root=args.data_root, device="cpu")
        train_entry(cfg, out / name, print, False)
        results.append(evaluate(out / name, out / "eval" / name, args.data_root, consistent=False))
    keyed = evaluate(out / "ours_rn18_3", out / "eval" / "ours_rn18_3_keyed", args.data_root, consistent=True)
    results.insert(1, {**keyed, "name": "ours_rn18_3 + device key"})
    keys = ["1", "4", "16", "inf"]
    lines = ["| method | utility | " + " | ".join(f"privacy@{k}" for k in keys) + " | delta@1 | delta@16 | delta@inf |",
             "|---|---|" + "---|" * (len(keys) + 3)]
    for r in results:
        by, d = r["privacy_by_queries"], r["delta_by_queries"]
        fams = {k: r["attacks"]["attribute"]["by_queries"][k]["best_family"] for k in keys}
        cells = " | ".join(f"{pct(by[k])} ({fams[k]})" for k in keys)
        lines.append(f"| {r['name']} | {pct(r['utility'])} | {cells} | {100 * d['1']:+.2f} | {100 * d['16']:+.2f} | "
                     f"{100 * d['inf']:+.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    (out / "queries.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"runs": results}, indent=1))
    plot_privacy_queries(results, out / "privacy_queries.png")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
