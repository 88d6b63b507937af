"""Levers for the noise-free features, chosen on a validation split (issue "Privacy in the features").

Each setting is a shipped config plus ``--set`` overrides. ``--stage val`` (the default)
trains every setting on the training pool less a seeded validation share
(``data.val_fraction``) and attacks it on the validation images: the test split is
not read, so the choice does not peek. ``--stage test --settings NAME,...`` trains the
chosen settings on the whole pool and attacks them once on the test split.

Attackers: the attribute attack with every family (head, mlp, knn, linear, mlp_flat),
owning the obfuscator (fresh draws every epoch), at the numbers of queries given.
Prints one table (utility, privacy@k with the best family, delta@k) and writes
OUT/<stage>.md, OUT/<stage>.json and a frontier plot OUT/<stage>_frontier.png
(utility against privacy at the noise-free limit). Finished runs and evaluations
in OUT are reused, so an interrupted run continues where it stopped.

    python benchmarks/feature_levers.py --data-root /tmp/privsplit-data --out /tmp/levers
    python benchmarks/feature_levers.py --data-root /tmp/privsplit-data --out /tmp/levers --stage test \\
        --settings robust,rn18_4_b128 --limit-train 20000 --limit-test 5000 --queries 1,16,inf
    python benchmarks/feature_levers.py --dataset utkface --image-size 32 --limit-train 8000 \
        --data-root /tmp/privsplit-data --out /tmp/levers-utk --settings robust,maxent
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from privsplit.attacks import AttackOptions, parse_queries, query_key
from privsplit.config import apply_overrides, load_config
from privsplit.evaluate import EvalOptions, evaluate_run
from privsplit.report import _jsonable, pct
from privsplit.train.engine import train

ENTROPY_PROXY = "{name: clean, kind: attribute, queries: inf, objective: entropy}"
LINEAR_PROXY = "{name: linear, kind: attribute, family: linear, queries: inf, objective: entropy}"
FLAT_PROXY = "{name: flat, kind: attribute, family: mlp_flat, queries: inf, objective: entropy}"

RN18_4_B128 = ["model.split=rn18_4", "method_args.bottleneck=128", f"adversaries=[{ENTROPY_PROXY}, {LINEAR_PROXY}]"]

# name -> (config without its data set prefix, overrides); settings of ours keep the config's rms noise
# (sigma 4) unless they set it
SETTINGS: dict[str, tuple[str, list[str]]] = {
    "robust": ("rn18_3_robust", []),
    "robust_dep1": ("rn18_3_robust", ["method_args.dependence=1"]),
    "robust_linear": ("rn18_3_robust", [f"adversaries=[{ENTROPY_PROXY}, {LINEAR_PROXY}]"]),
    "rn18_3_b32": ("rn18_3_robust", [f"adversaries=[{ENTROPY_PROXY}, {LINEAR_PROXY}]",
                                             "method_args.bottleneck=32"]),
    "rn18_4_b128": ("rn18_3_robust", ["model.split=rn18_4", "method_args.bottleneck=128",
                                              f"adversaries=[{ENTROPY_PROXY}, {LINEAR_PROXY}]"]),
    "rn18_4_b128_dep1": ("rn18_3_robust", ["model.split=rn18_4", "method_args.bottleneck=128",
                                                   f"adversaries=[{ENTROPY_PROXY}, {LINEAR_PROXY}]",
                                                   "method_args.dependence=1"]),
    "rn18_4_b128_flat_reset": ("rn18_3_robust", ["model.split=rn18_4", "method_args.bottleneck=128",
                                                         f"adversaries=[{ENTROPY_PROXY}, "
                                                         f"{LINEAR_PROXY[:-1]}, reset_every: 2}}, {FLAT_PROXY}]"]),
    "rn18_4_b128_lam015": ("rn18_3_robust", ["model.split=rn18_4", "method_args.bottleneck=128",
                                                      f"adversaries=[{ENTROPY_PROXY}, {LINEAR_PROXY}]", "train.lam=0.15"]),
    "rn18_4_b128_s2": ("rn18_3_robust", [*RN18_4_B128, "reduction.0.sigma=2"]),
    "rn18_4_b128_s1": ("rn18_3_robust", [*RN18_4_B128, "reduction.0.sigma=1"]),
    "rn18_4_b128_s2_lam015": ("rn18_3_robust", [*RN18_4_B128, "reduction.0.sigma=2", "train.lam=0.15"]),
    "rn18_4_s2": ("rn18_3_robust", ["model.split=rn18_4", "reduction.0.sigma=2",
                                            f"adversaries=[{ENTROPY_PROXY}, {LINEAR_PROXY}]"]),
    "maxent": ("maxent", []),
    "ours_rn18_4_robust": ("rn18_4_robust", []),
    # the other rows of RESULTS.md's "Repeated queries" table, as shipped
    "ours_rn18_3": ("rn18_3", []),
    "no_noise_rn18_3": ("no_noise_rn18_3", []),
    "disco": ("disco", []),
}
KEYED = "+key"  # a setting's run deployed with a device key (consistent randomness), e.g. ours_rn18_3+key


def setting_config(name: str, args: argparse.Namespace, stage: str):  # noqa: ANN201
    config, sets = SETTINGS[name]
    data = [f"data.root={args.data_root}", f"data.limit_train={args.limit_train}",
            f"data.limit_test={args.limit_test}", f"data.val_fraction={args.val_fraction if stage == 'val' else 0}"]
    if args.image_size:
        data.append(f"data.image_size={args.image_size}")
    cfg = apply_overrides(load_config(f"{args.dataset}_{config}"), [*sets, *data, f"train.epochs={args.epochs}",
                                                f"train.threads={args.threads}", "train.device=cpu"])
    cfg.name = name
    return cfg


def run_setting(name: str, args: argparse.Namespace, out: Path, queries: tuple[float, ...]) -> dict:
    base = name.removesuffix(KEYED)
    run_dir, eval_dir = out / args.stage / base, out / args.stage / "eval" / name
    cfg = setting_config(base, args, args.stage)
    t0 = time.time()
    if not (run_dir / "run.json").is_file():
        train(cfg, run_dir, resume=(run_dir / "config.yaml").is_file(), progress=False)
    train_s = time.time() - t0
    if (eval_dir / "results.json").is_file():
        return json.loads((eval_dir / "results.json").read_text())
    t1 = time.time()
    options = EvalOptions(attacks=("attribute",), overrides=[f"data.root={args.data_root}"], consistent=name != base,
                          attack=AttackOptions(epochs=args.attack_epochs, queries=queries),
                          latency_repeats=2, progress=False)
    res = json.loads(json.dumps(_jsonable(evaluate_run(run_dir, options, eval_dir))))
    res["wall_s"] = {"train": round(train_s, 1), "evaluate": round(time.time() - t1, 1)}
    (eval_dir / "results.json").write_text(json.dumps(res, indent=1))
    return res


def table(results: dict[str, dict], keys: list[str]) -> str:
    lines = ["| setting | utility | " + " | ".join(f"privacy@{k}" for k in keys) + " | "
             + " | ".join(f"delta@{k}" for k in keys) + " | z values |",
             "|---|---|" + "---|" * (2 * len(keys) + 1)]
    for name, r in results.items():
        by = r["attacks"]["attribute"]["by_queries"]
        cells = " | ".join(f"{pct(by[k]['accuracy'])} ({by[k]['best_family']})" for k in keys)
        deltas = " | ".join(f"{100 * (r['utility'] - by[k]['accuracy']):+.2f}" for k in keys)
        lines.append(f"| {name} | {pct(r['utility'])} | {cells} | {deltas} | {math.prod(r['z_shape'])} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict], path: Path, key: str, dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, r in results.items():
        p = r["attacks"]["attribute"]["by_queries"][key]["accuracy"]
        colour = "tab:blue" if r["config"]["method"] == "ours" else "tab:red"
        keyed = name.endswith(KEYED)  # identical repeats only: hollow
        ax.scatter(100 * p, 100 * r["utility"], facecolors="none" if keyed else colour, edgecolors=colour)
        ax.annotate(name, (100 * p, 100 * r["utility"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"privacy@{key}: best attacker on the private label (%), lower is better")
    ax.set_ylabel("utility accuracy (%)")
    ax.set_title(f"{dataset}: one point per setting (blue: ours; hollow: device key, identical repeats)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="folder holding the data set (e.g. cifar10/train, cifar10/test)")
    p.add_argument("--dataset", default="cifar10", choices=("cifar10", "utkface"),
                   help="a setting NAME reads configs/<dataset>_<config>.yaml (default cifar10)")
    p.add_argument("--image-size", type=int, default=None,
                   help="data.image_size of every setting (default: the configs'; budget faces-cpu uses 32)")
    p.add_argument("--out", default="benchmarks/runs/levers", help="working folder")
    p.add_argument("--stage", choices=("val", "test"), default="val",
                   help="val: train on the pool less the validation share, attack on it; test: train on the pool, "
                   "attack on the test split")
    p.add_argument("--settings", default=",".join(SETTINGS),
                   help=f"comma-separated, of: {', '.join(SETTINGS)}; NAME{KEYED} evaluates NAME's run with a device key")
    p.add_argument("--limit-train", type=int, default=10000, help="training pool (default 10000)")
    p.add_argument("--limit-test", type=int, default=2000, help="test images, for --stage test (default 2000)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="validation share of the pool (default 0.2)")
    p.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    p.add_argument("--attack-epochs", type=int, default=5, help="attacker epochs (default 5)")
    p.add_argument("--queries", default="1,inf", help="numbers of queries to attack at (default 1,inf)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = p.parse_args()
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    unknown = [n for n in names if n.removesuffix(KEYED) not in SETTINGS]
    if unknown:
        p.error(f"unknown setting(s) {', '.join(unknown)}; valid: {', '.join(SETTINGS)}")
    queries = parse_queries(args.queries)
    out = Path(args.out)
    results = {}
    for name in names:
        results[name] = run_setting(name, args, out, queries)
        print(table({name: results[name]}, [query_key(q) for q in queries]).splitlines()[-1], flush=True)
    keys = [query_key(q) for q in queries]
    text = table(results, keys)
    print(text)
    (out / f"{args.stage}.md").write_text(text)
    (out / f"{args.stage}.json").write_text(json.dumps(results, indent=1))
    plot(results, out / f"{args.stage}_frontier.png", keys[-1], args.dataset)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
