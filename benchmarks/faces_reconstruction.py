"""The reconstruction attack on UTKFace at the paper's 178x178 px: the face table of
benchmarks/RESULTS.md (ours at rn18_3 and rn18_4, no_noise, and the raw image).

On a 2-core CPU a 178 px ResNet18 trains at ~20 images/s and the attacker's decoder at
~13, so this runs on a subset: each method is trained on --train-images images for
--epochs epochs, then a fresh decoder (the reconstruction attacker, which owns the
obfuscator: fresh draws every epoch) is trained on --attack-images of the training split
for --attack-epochs epochs and scored, at its best epoch, on --test-images test faces with
MSE, L1, SSIM, MS-SSIM, PSNR, LPIPS (only with ImageNet weights: --lpips-weights) and
ST-LPIPS. The reference is the mean training face. The raw-image row (``resnet18``) sends
the image itself whatever its training, so it is trained only one epoch on 256 faces and
its utility is not reported.
Writes OUT/reconstruction.md, OUT/results.json and a grid PNG per method; finished runs
and evaluations in OUT are reused.

    python benchmarks/faces_reconstruction.py --data-root /tmp/privsplit-data [--out benchmarks/runs/utkface-178]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from privsplit.attacks import AttackOptions
from privsplit.benchmark import BUDGETS, ENTRIES, entry_config, train_entry
from privsplit.config import apply_overrides
from privsplit.evaluate import EvalOptions, evaluate_run
from privsplit.report import _num

RAW = "resnet18"  # z is the image itself
ROWS = ("ours_rn18_3", "ours_rn18_4", "no_noise_rn18_3", RAW)
METRICS = ("mse", "l1", "ssim", "ms_ssim", "psnr", "lpips", "st_lpips")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="folder holding UTKFace/")
    p.add_argument("--out", default="benchmarks/runs/utkface-178", help="working folder")
    p.add_argument("--train-images", type=int, default=4000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--attack-images", type=int, default=800)
    p.add_argument("--test-images", type=int, default=200)
    p.add_argument("--attack-epochs", type=int, default=12)
    p.add_argument("--rows", default=",".join(ROWS), help=f"methods to attack (default {','.join(ROWS)})")
    p.add_argument("--lpips-weights", help="LPIPS(alex) weights (else LPIPS is unavailable)")
    args = p.parse_args()
    out = Path(args.out)
    rows = []
    for name in args.rows.split(","):
        entry = next(e for e in ENTRIES if e.name == name)
        cfg = entry_config(entry, "utkface", BUDGETS["paper"], data_root=args.data_root, device="cpu")
        raw = name == RAW
        cfg = apply_overrides(cfg, [f"train.epochs={1 if raw else args.epochs}",
                                    f"data.limit_train={256 if raw else args.train_images}",
                                    f"data.limit_test={args.test_images}", "data.image_size=178"])
        cfg.name = name
        train_entry(cfg, out / name, print, False)
        ev = out / "eval" / name
        if not (ev / "results.json").is_file():
            options = EvalOptions(
                attacks=("reconstruction",), lpips_weights=args.lpips_weights, latency_repeats=5, progress=False,
                overrides=[f"data.root={args.data_root}", f"data.limit_train={args.attack_images}",
                           f"data.limit_test={args.test_images}"],
                attack=AttackOptions(epochs=args.attack_epochs, queries=(1,)))
            evaluate_run(out / name, options, ev)
        r = json.loads((ev / "results.json").read_text())
        rows.append((name, r))
        shutil.copyfile(ev / "reconstruction.png", out / f"reconstruction_{name}.png")
    base = rows[0][1]["attacks"]["reconstruction"]["mean_image_baseline"]
    lines = ["| method | utility | best epoch | MSE ↑ | L1 ↑ | SSIM ↓ | MS-SSIM ↓ | PSNR ↓ | LPIPS ↑ | ST-LPIPS ↑ | decoder converged |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows + [("mean training face (no z)", None)]:
        rec = r["attacks"]["reconstruction"] if r else None
        m = rec["metrics"] if rec else base
        cells = " | ".join(_num(m.get(k), "{:.2f}" if k in ("mse", "l1", "psnr") else "{:.4f}") for k in METRICS)
        util = f"{100 * r['utility']:.2f}" if r and name != RAW else "-"
        conv = ("yes" if rec["converged"] else "NO") if rec else "-"
        best = f"{rec['best_epoch']} of {len(rec['test_mse'])}" if rec else "-"
        lines.append(f"| {name} | {util} | {best} | {cells} | {conv} |")
    notes = rows[0][1]["attacks"]["reconstruction"]["metrics"]["notes"]
    lines += ["", f"UTKFace at 178x178: each method trained {args.epochs} epoch(s) on {args.train_images} images; "
              f"decoders trained {args.attack_epochs} epochs on {args.attack_images} training images (fresh "
              f"obfuscator draws every epoch), scored at their best epoch on {args.test_images} test faces; one "
              f"query. The raw image ({RAW}) is trained 1 epoch on 256 faces (its z is the image). "
              "MSE and L1 on the 0-255 scale, PSNR in dB. " + " ".join(f"{k}: {v}." for k, v in notes.items())]
    text = "\n".join(lines) + "\n"
    (out / "reconstruction.md").write_text(text)
    (out / "results.json").write_text(json.dumps({n: r for n, r in rows}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
