"""Which decoder makes the strongest reconstruction attacker? Trains each decoder
design of privsplit.models.Decoder on the same trained runs' ``z`` and prints
their test scores side by side, so a change of the attacker can be shown not to
weaken it.

Designs: ``plain`` (the proxy adversary's decoder, and the attacker's before
normalised input and tapered widths), ``normalize`` (batch norm on ``z`` first),
``taper`` (wide where coarse, narrow where fine) and ``attacker`` (both: what
``privsplit evaluate`` uses). Every design is trained exactly as the attack
trains it (fresh obfuscator draws every epoch, scored at its best epoch).

    python benchmarks/reconstruction_attackers.py RUN_DIR [RUN_DIR ...] --epochs 10 \\
        [--set data.limit_train=4000 ...]
"""

from __future__ import annotations

import argparse
import time

from privsplit.attacks import AttackOptions
from privsplit.attacks.reconstruction import ReconstructionAttack
from privsplit.evaluate import EvalOptions, load_eval_data
from privsplit.run import load_run

DESIGNS = {
    "plain": {},
    "normalize": {"normalize_input": True},
    "taper": {"taper": True},
    "attacker": {"normalize_input": True, "taper": True},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="trained run folders")
    p.add_argument("--epochs", type=int, default=10, help="decoder training epochs (default 10)")
    p.add_argument("--designs", default=",".join(DESIGNS), help=f"comma-separated, of {', '.join(DESIGNS)}")
    p.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE",
                   help="data settings for the attack (e.g. data.root, data.limit_train)")
    args = p.parse_args()
    designs = args.designs.split(",")
    unknown = [d for d in designs if d not in DESIGNS]
    if unknown:
        p.error(f"unknown design(s) {', '.join(unknown)}; valid: {', '.join(DESIGNS)}")
    print("| run | decoder | best epoch | MSE ↑ | SSIM ↓ | PSNR ↓ | converged | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for run_dir in args.runs:
        run = load_run(run_dir)
        data, _ = load_eval_data(run, EvalOptions(progress=False, overrides=args.set), keep_images=True)
        for design in designs:
            attack = ReconstructionAttack()
            attack.decoder_options = DESIGNS[design]
            t = time.perf_counter()
            r = attack.run(data, AttackOptions(epochs=args.epochs, queries=(1,), progress=False, log=lambda s: None))
            m = r["metrics"]
            print(f"| {run.dir.name} | {design} | {r['best_epoch']} of {args.epochs} | {m['mse']:.1f} | "
                  f"{m['ssim']:.4f} | {m['psnr']:.2f} | {'yes' if r['converged'] else 'NO'} | "
                  f"{time.perf_counter() - t:.0f} |", flush=True)
        base = r["mean_image_baseline"]
        print(f"| {run.dir.name} | mean training image (no z) | - | {base['mse']:.1f} | {base['ssim']:.4f} | "
              f"{base['psnr']:.2f} | - | - |", flush=True)


if __name__ == "__main__":
    main()
