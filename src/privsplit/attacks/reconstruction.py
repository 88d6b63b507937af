"""Reconstruction: a decoder trained (MSE, Adam lr 1e-3) to map ``z`` back to the image.

The decoder normalises its input (so the scale of ``z`` does not slow it) and is
scored at its best epoch, the one with the lowest test MSE, as the attribute
attackers report their best test accuracy: both choices are the attacker's.
Reported on the test split with the image metrics of
:func:`privsplit.metrics.image_metrics`, beside the same metrics for the
*mean training image*, the reconstruction an attacker gets without ``z``
(the chance level of this attack).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from ..metrics.image import LPIPS, image_metrics
from ..models.decoder import Decoder
from ..progress import Progress
from ..formatting import at_queries, num
from .base import (ATTACKS, Attack, AttackOptions, EvalData, attack_record, attacker_converged, epoch_batches, fit_epoch,
                   per_query, perceptual_models, query_key, worst_image_verdict)
from .result import ImageResult


def _images(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(255)


class ReconstructionResult(ImageResult):
    """The decoder's reconstructions: every image metric beside the mean training image."""

    title = "Reconstruction attack"

    def _label(self) -> str:
        return "reconstruction attack"

    def not_converged(self) -> list[str]:
        return [f"decoder@{q}" for q, v in self.distinct_queries().items() if not v["converged"]]

    def summary_lines(self, run: dict[str, Any]) -> list[str]:
        m = self.record["metrics"]
        return [f"reconstruction: MSE {m['mse']:.1f}, L1 {m['l1']:.2f} (0-255), SSIM {m['ssim']:.3f}, "
                f"MS-SSIM {num(m['ms_ssim'], '{:.3f}')}, PSNR {num(m['psnr'], '{:.2f}')} dB, LPIPS {num(m['lpips'], '{:.3f}')}, "
                f"ST-LPIPS {num(m.get('st_lpips'), '{:.3f}')}"]

    def warnings(self, run: dict[str, Any]) -> list[str]:
        qs = self.distinct_queries()
        return [f"reconstruction decoder{at_queries(q, len(qs) > 1)} had not converged (training loss still falling at "
                f"epoch {len(v['train_loss'])}, and test MSE lowest at the last epoch); rerun with more --attack-epochs"
                for q, v in qs.items() if not v["converged"]]

    def report_markdown(self, run: dict[str, Any]) -> list[str]:
        rec = self.record
        m, b = rec["metrics"], rec["mean_image_baseline"]
        md = ["", "## Reconstruction", "",
              "| metric | decoder | mean training image (no z) |", "|---|---|---|",
              f"| MSE (0-255) | {m['mse']:.2f} | {b['mse']:.2f} |",
              f"| L1 (0-255) | {m['l1']:.2f} | {b['l1']:.2f} |",
              f"| SSIM | {m['ssim']:.4f} | {b['ssim']:.4f} |",
              f"| MS-SSIM | {num(m['ms_ssim'])} | {num(b['ms_ssim'])} |",
              f"| PSNR (dB, range 255) | {num(m['psnr'], '{:.2f}')} | {num(b['psnr'], '{:.2f}')} |",
              f"| LPIPS | {num(m['lpips'])} | {num(b['lpips'])} |",
              f"| ST-LPIPS (shift-tolerant, not comparable to LPIPS) | {num(m.get('st_lpips'))} | {num(b.get('st_lpips'))} |",
              ""]
        md += [f"- {k}: {v}" for k, v in m["notes"].items()]
        best = (f"input normalised, scored at its best epoch ({rec['best_epoch']}, lowest test MSE); "
                if "best_epoch" in rec else "")  # results written before the attacker had both
        md += [f"- decoder: {rec['epochs']} epochs, Adam lr {rec['lr']}, MSE loss; {best}final "
               f"training MSE {num(rec['train_loss'][-1] if rec['train_loss'] else None)} (0-1 scale)"]
        if rec.get("grid"):
            md += ["", f"![originals (top) and reconstructions (bottom)]({rec['grid']})"]
        return md


@ATTACKS.register("reconstruction")
class ReconstructionAttack(Attack):
    """A fresh :class:`Decoder` on ``z`` at every number of queries; reports
    similarity and saves a grid. The headline is the one-query figure."""

    needs_images = True
    needs_lpips = True
    reconstructs = True
    result_type = ReconstructionResult
    # The attacker's decoder (see Decoder); benchmarks/reconstruction_attackers.py compares others.
    decoder_options: dict[str, Any] = {"normalize_input": True, "taper": True}

    def run(self, data: EvalData, options: AttackOptions) -> ReconstructionResult:
        assert data.x_train is not None and data.x_test is not None, "reconstruction needs the images"
        original = _images(data.x_test.cpu())
        perceptual = perceptual_models(data, options)
        # The reconstruction an attacker gets without z: the mean training image.
        mean_image = _images(data.x_train.cpu()).mean(0, keepdim=True).expand_as(original)
        baseline = image_metrics(original, mean_image, **perceptual)
        by_queries = per_query(data, options, lambda q: self._at(data, options, q, original, baseline, perceptual))
        return ReconstructionResult(self.name, {**by_queries["1"], **worst_image_verdict(by_queries),
                                                "mean_image_baseline": baseline, **attack_record(data, options, by_queries)})

    def _at(self, data: EvalData, options: AttackOptions, q: Any, original: torch.Tensor,
            baseline: dict[str, Any], perceptual: dict[str, LPIPS | None]) -> dict[str, Any]:
        assert data.x_train is not None
        torch.manual_seed(options.seed + 7)
        z_test = data.z_test(q)
        decoder = Decoder(data.z_shape, data.info.image_shape, **self.decoder_options).to(z_test.device)
        opt = torch.optim.Adam(decoder.parameters(), lr=options.lr)
        gen = torch.Generator().manual_seed(options.seed)
        bs = options.batch_size
        losses: list[float] = []
        test_mse: list[float] = []
        best: tuple[float, dict[str, torch.Tensor]] | None = None  # (test MSE, decoder weights)
        at = f" at {query_key(q)} quer{'y' if q == 1 else 'ies'}" if data.repeats_help else ""
        options.log(f"  reconstruction attack{at}: training a decoder z {tuple(data.z_shape)} -> image "
                    f"{tuple(data.info.image_shape)} for {options.epochs} epoch(s)")
        bar = Progress(total=options.epochs * epoch_batches(data.n_train, bs), desc=f"decoder{at}", unit="batch",
                       enabled=options.progress)

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            return F.mse_loss(decoder(data.z_train(idx, q, options.fresh_draws)), _images(data.x_train[idx]))

        for epoch in range(options.epochs):
            losses.append(fit_epoch(decoder, opt, data.n_train, bs, gen, batch_loss, bar.update))
            test_mse.append(_test_mse(decoder, z_test, original, 4 * bs))
            # Like the attribute attackers' best test accuracy, the best epoch is the attacker's.
            if best is None or test_mse[-1] < best[0]:
                best = (test_mse[-1], {k: v.detach().clone() for k, v in decoder.state_dict().items()})
            bar.set_postfix(**{"after epoch": f"{epoch + 1}/{options.epochs}"}, mse=f"{losses[-1]:.4f}", test_mse=f"{test_mse[-1]:.4f}")
        bar.close()
        assert best is not None, "the decoder needs at least one epoch"
        best_epoch = test_mse.index(best[0]) + 1
        decoder.load_state_dict(best[1])
        recon = torch.cat(list(_decode(decoder, z_test, 4 * bs)))
        metrics = image_metrics(original, recon, **perceptual)
        grid = None
        if options.out_dir is not None:
            name = "reconstruction.png" if q == 1 else f"reconstruction_q{query_key(q)}.png"
            grid = save_grid(original[:8], recon[:8], Path(options.out_dir) / name)
        # The decoder reconstructs when it beats the mean image clearly on SSIM.
        leaks = metrics["ssim"] > baseline["ssim"] + 0.05 and metrics["mse"] < baseline["mse"]
        return {
            "metrics": metrics,
            "train_loss": losses,
            "test_mse": test_mse,  # per epoch, 0-1 scale (metrics["mse"] is 0-255)
            "best_epoch": best_epoch,
            # Scored by the test error (lower is better); an MSE loss is never "fitted" by a fixed level.
            "converged": attacker_converged(losses, test_mse, options.converge_margin, fitted=0.0, higher_is_better=False),
            "verdict": "reconstructs" if leaks else "no better than the mean image",
            "grid": grid.name if grid else None,
        }


@torch.no_grad()
def _decode(decoder: Decoder, z: torch.Tensor, chunk: int) -> Iterator[torch.Tensor]:
    """The decoder's images for ``z`` in eval mode, on the CPU, ``chunk`` at a time."""
    decoder.eval()
    for i in range(0, len(z), chunk):
        yield decoder(z[i : i + chunk]).cpu()


def _test_mse(decoder: Decoder, z: torch.Tensor, original: torch.Tensor, chunk: int) -> float:
    """Mean squared error (0-1 scale) of the decoder's images for ``z``, chunk by chunk
    (the whole test split's images need not be held twice)."""
    total = sum(F.mse_loss(images, original[i * chunk : i * chunk + len(images)], reduction="sum").item()
                for i, images in enumerate(_decode(decoder, z, chunk)))
    return total / original.numel()


def save_grid(original: torch.Tensor, recon: torch.Tensor, path: Path) -> Path:
    """PNG with originals (top row) above their reconstructions (bottom row)."""
    from PIL import Image

    n = len(original)
    _, h, w = original.shape[1:]
    pad = 2
    canvas = torch.ones(3, 2 * h + 3 * pad, n * w + (n + 1) * pad)
    for i in range(n):
        x0 = pad + i * (w + pad)
        canvas[:, pad : pad + h, x0 : x0 + w] = original[i]
        canvas[:, 2 * pad + h : 2 * pad + 2 * h, x0 : x0 + w] = recon[i]
    # Small images are enlarged (nearest neighbour) so the grid is legible.
    scale = max(1, 96 // h)
    arr = (canvas.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    img = Image.fromarray(arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
