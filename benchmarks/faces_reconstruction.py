"""The reconstruction attacks on UTKFace at the paper's 178x178 px: the face tables of
benchmarks/RESULTS.md (the decoder on ours, no_noise and the raw image; the decoder beside the
white-box inversion for no_noise at rn18_1 ... rn18_4).

On a 2-core CPU a 178 px ResNet18 trains at ~20 images/s and the attacker's decoder at
~13, so this runs on a subset: each method is trained on --train-images images for
--epochs epochs, then every attack of --attacks is run on --test-images test faces at every
number of queries of --queries: ``reconstruction`` (a fresh decoder, which owns the
obfuscator: fresh draws every epoch, trained on --attack-images of the training split for
--attack-epochs epochs and scored at its best epoch), ``inversion`` (He et al.'s white-box
input optimisation, --inversion-steps at most) and ``model_space`` (the same without the
client's weights). Scores: MSE, L1, SSIM, MS-SSIM, PSNR, LPIPS (only with ImageNet weights:
--lpips-weights) and ST-LPIPS; the reference is the mean training face. The raw-image row
(``resnet18``) sends the image itself whatever its training, so it is trained only one epoch
on 256 faces and its utility is not reported. A row ``no_noise_rn18_K`` is no_noise cut after
stage K (1 to 4).
Writes OUT/reconstruction.md, OUT/results.json and a grid PNG per method and attack; finished
runs and evaluations in OUT are reused. Each attack's wall time is in the table.

    python benchmarks/faces_reconstruction.py --data-root /tmp/privsplit-data [--out benchmarks/runs/utkface-178]
    python benchmarks/faces_reconstruction.py --data-root DATA --rows no_noise_rn18_1,no_noise_rn18_2,no_noise_rn18_3,no_noise_rn18_4 \
        --attacks reconstruction,inversion --epochs 1 --train-images 3000 --attack-epochs 8 --attack-images 400
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from pathlib import Path

from privsplit.attacks import AttackOptions
from privsplit.attacks.base import parse_queries
from privsplit.benchmark import BUDGETS, ENTRIES, entry_config, train_entry
from privsplit.config import apply_overrides
from privsplit.evaluate import EvalOptions, evaluate_run
from privsplit.report import _num

RAW = "resnet18"  # z is the image itself
ROWS = ("ours_rn18_3", "ours_rn18_4", "no_noise_rn18_3", RAW)
METRICS = ("mse", "l1", "ssim", "ms_ssim", "psnr", "lpips", "st_lpips")
NO_NOISE_AT = re.compile(r"no_noise_(rn18_[1-4])")  # no_noise cut after any stage


def row_config(name: str, data_root: str):  # noqa: ANN201
    """The paper budget's config of row ``name`` (an entry of the benchmark, or no_noise_rn18_K)."""
    split = NO_NOISE_AT.fullmatch(name)
    entry = next((e for e in ENTRIES if e.name == ("no_noise_rn18_3" if split else name)), None)
    if entry is None:
        raise SystemExit(f"unknown row {name!r}: expected one of {', '.join(e.name for e in ENTRIES)} or no_noise_rn18_1..4")
    cfg = entry_config(entry, "utkface", BUDGETS["paper"], data_root=data_root, device="cpu")
    return apply_overrides(cfg, [f"model.split={split.group(1)}"]) if split else cfg


def attack_rows(name: str, r: dict, util: str, seconds: float) -> list[str]:
    """Table lines of one row's attack: one per distinct number of queries (a deterministic client, or one
    query only, gives one)."""
    rec = r["attacks"][r["attack"]]
    by = rec.get("by_queries") or {"1": rec}
    distinct = {q: v for q, v in by.items() if q == "1" or v != by["1"]}
    lines = []
    for q, res in distinct.items():
        k = q if len(distinct) > 1 else ("any" if len(by) > 1 else q)
        cells = " | ".join(_num(res["metrics"].get(m), "{:.2f}" if m in ("mse", "l1", "psnr") else "{:.4f}")
                           for m in METRICS)
        if "best_epoch" in res:
            done = f"best epoch {res['best_epoch']} of {len(res['test_mse'])}, {'converged' if res['converged'] else 'NOT converged'}"
        else:
            steps = res.get("steps_run") or []
            done = f"{min(steps)}-{max(steps)} steps, fit {res['feature_fit']:.3f}" if steps else ""
        lines.append(f"| {name} | {util} | {r['attack']} | {k} | {cells} | {done} | {seconds:.0f} s |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="folder holding UTKFace/")
    p.add_argument("--out", default="benchmarks/runs/utkface-178", help="working folder")
    p.add_argument("--train-images", type=int, default=4000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--attack-images", type=int, default=800)
    p.add_argument("--test-images", type=int, default=200)
    p.add_argument("--attack-epochs", type=int, default=12)
    p.add_argument("--attacks", default="reconstruction",
                   help="comma-separated: reconstruction, inversion, model_space (default reconstruction)")
    p.add_argument("--queries", default="1", help="numbers of queries, e.g. 1,16,inf (default 1)")
    p.add_argument("--inversion-steps", type=int, default=AttackOptions.inversion_steps)
    p.add_argument("--rows", default=",".join(ROWS),
                   help=f"methods to attack (default {','.join(ROWS)}; no_noise_rn18_1..4 too)")
    p.add_argument("--lpips-weights", help="LPIPS(alex) weights (else LPIPS is unavailable)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    queries = parse_queries(args.queries)
    out = Path(args.out)
    rows, lines = {}, []
    for name in args.rows.split(","):
        cfg = row_config(name, args.data_root)
        raw = name == RAW
        cfg = apply_overrides(cfg, [f"train.epochs={1 if raw else args.epochs}",
                                    f"data.limit_train={256 if raw else args.train_images}",
                                    f"data.limit_test={args.test_images}", "data.image_size=178"])
        cfg.name = name
        train_entry(cfg, out / name, print, False)
        for attack in args.attacks.split(","):
            ev = out / "eval" / name / attack
            if not (ev / "results.json").is_file():
                options = EvalOptions(
                    attacks=(attack,), lpips_weights=args.lpips_weights, latency_repeats=0, progress=False,
                    overrides=[f"data.root={args.data_root}", f"data.limit_train={args.attack_images}",
                               f"data.limit_test={args.test_images}"],
                    attack=AttackOptions(epochs=args.attack_epochs, queries=queries,
                                         inversion_steps=args.inversion_steps))
                began = time.monotonic()
                evaluate_run(out / name, options, ev)
                (ev / "seconds.txt").write_text(f"{time.monotonic() - began:.1f}\n")
            r = {**json.loads((ev / "results.json").read_text()), "attack": attack}
            rows.setdefault(name, {})[attack] = r
            for png in ev.glob("*.png"):
                shutil.copyfile(png, out / f"{attack}_{name}_{png.name}")
            seconds = float((ev / "seconds.txt").read_text()) if (ev / "seconds.txt").is_file() else float("nan")
            util = f"{100 * r['utility']:.2f}%" if name != RAW else "-"
            lines += attack_rows(name, r, util, seconds)
    first = next(iter(next(iter(rows.values())).values()))
    base = first["attacks"][first["attack"]]["mean_image_baseline"]
    cells = " | ".join(_num(base.get(m), "{:.2f}" if m in ("mse", "l1", "psnr") else "{:.4f}") for m in METRICS)
    lines.append(f"| mean training face (no z) | - | - | - | {cells} | | |")
    head = ["| method | utility | attacker | k | MSE ↑ | L1 ↑ | SSIM ↓ | MS-SSIM ↓ | PSNR ↓ | LPIPS ↑ | ST-LPIPS ↑ "
            "| how it ended | wall |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = first["attacks"][first["attack"]]["metrics"]["notes"]
    text = "\n".join(head + lines + [
        "", f"UTKFace at 178x178: each method trained {args.epochs} epoch(s) on {args.train_images} images; "
        f"decoders trained {args.attack_epochs} epochs on {args.attack_images} training images (fresh "
        f"obfuscator draws every epoch), scored at their best epoch on {args.test_images} test faces; "
        f"inversions at most {args.inversion_steps} steps per batch; k: numbers of queries (any: a deterministic "
        f"client). The raw image ({RAW}) is trained 1 epoch on 256 faces (its z is the image). "
        "MSE and L1 on the 0-255 scale, PSNR in dB. " + " ".join(f"{k}: {v}." for k, v in notes.items())]) + "\n"
    (out / "reconstruction.md").write_text(text)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print(text)


if __name__ == "__main__":
    main()
