"""White-box inversion: optimise an image until the client's output for it matches ``z``.

The input-optimisation attack of He et al. (2019, "Model inversion attacks against
collaborative inference", rMLE in the literature). The server owns the obfuscator
(it ships inside the client app), so it can differentiate through it: for each test
image it optimises ``x̂`` in [0, 1] (Adam, projected onto [0, 1] after every step)
to minimise

    ||f(x̂) - z̄_k||² / ||z̄_k||²  +  tv · TV(x̂)

where ``f = reduce_silenced ∘ encode`` is the client with its noise silenced and
``z̄_k`` the mean of ``k`` received ``z`` (``inf``: the noise-free features). For
Gaussian noise this is the attacker's maximum-likelihood estimate of the image
under a total-variation prior. The fit is relative (divided by the power of ``z̄``)
so the learning rate and the prior weight do not depend on the scale of ``z``.
It starts from the mean training image, runs batched over images and stops a
batch early when its objective stops falling.

Random ops other than noise (shuffle, replace) are not removed by silencing: the
attacker does not know their draws (neither does the server under consistent
randomness: they come from a key on the device), so every step draws them afresh,
which minimises the expected mismatch over the draws.

:mod:`.model_space` is the attacker who does *not* own the client.

Example:
    >>> x_hat, info = invert(client, z, start, InversionSettings())  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import ConfigError
from ..metrics.image import LPIPS, image_metrics
from ..progress import Progress
from ..formatting import IMAGE_METRICS, at_queries, num, queries_words
from .base import (ATTACKS, Attack, AttackOptions, EvalData, Query, attack_record, per_query, perceptual_models, query_key,
                   worst_image_verdict)
from .result import ImageResult
from .reconstruction import save_grid

# How often (in steps) a batch's objective is compared with its value one window
# earlier, and the relative fall below which it counts as stopped falling; an
# objective under FITTED (a millionth of z's power) is fitted whatever its trend.
CHECK_EVERY = 25
STOP_TOL = 1e-3
FITTED = 1e-6
# At most this many pixels optimised together. Measured on the 2-core CPU (rn18_3, one
# Adam step, forward and backward): at 178 px, 25 ms per face and step for batches of
# 8 to 48 faces, 39 ms at 128 (a batch of 128 no longer fits the caches); at 32 px
# the cap leaves the batch at 128.
PIXELS_PER_BATCH = 2**20


def batch_for(settings_batch: int, image_shape: tuple[int, ...]) -> int:
    """Images per optimisation batch: ``settings_batch``, fewer for large images
    (:data:`PIXELS_PER_BATCH`); ``image_shape`` is (C, H, W) or (1, C, H, W)."""
    h, w = image_shape[-2:]
    return max(1, min(settings_batch, PIXELS_PER_BATCH // (h * w)))


def channels_last(client: nn.Module) -> nn.Module:
    """A copy of ``client`` in the channels-last layout, which the CPU's convolutions
    run faster forward and backward (measured at rn18_3: 26 against 34 ms per 178 px
    face and step, 0.7 against 0.9 at 32 px); the caller's client is left as it is."""
    return copy.deepcopy(client).to(memory_format=torch.channels_last)


def start_batch(start: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` copies of ``start`` (1, 3, H, W), channels-last, to be optimised."""
    return start.expand(n, *start.shape[1:]).clone(memory_format=torch.channels_last).requires_grad_(True)


@dataclass(frozen=True)
class InversionSettings:
    """The optimisation of :func:`invert`.

    The defaults were chosen on ``no_noise`` (the unprotected split, where a good
    attack must succeed), on validation images, never the test split. CIFAR-10 rn18_3
    (200 validation images carved from 20,000 training ones, 5 epochs; k = inf): TV 1
    beat 0, 0.003, 0.01, 0.03, 0.1, 0.3 and 3 on every metric (SSIM 0.254 against
    0.041 at 0.03 and 0.187 for the mean image; below 0.3 the inversion was worse than
    the mean image), and lr 0.1 beat 0.03 at TV 1 (0.02 beat 0.1 at TV 0.1 only);
    batches stopped after about 225 steps. On digits at 32 px (8 px upscaled,
    rn18_1..rn18_3) TV 0.03 had been best and lr 0.1 beat 0.02, 0.05 and 0.2:
    photographs need the stronger prior at this depth; give ``--inversion-tv`` for
    other data and splits.

    Attributes:
        steps: most Adam steps per batch of images.
        lr: Adam learning rate on pixel values in [0, 1].
        tv: weight of the total-variation prior (0: none).
        batch_size: images optimised together (fewer for large images, :func:`batch_for`).
        draws: fresh draws of the non-noise random ops averaged per step.
        surrogate_lr: Adam learning rate of the surrogate client (model-space attack).
    """

    steps: int = AttackOptions.inversion_steps
    lr: float = AttackOptions.inversion_lr
    tv: float = AttackOptions.inversion_tv
    batch_size: int = 128
    draws: int = 1
    surrogate_lr: float = 1e-3

    @classmethod
    def from_options(cls, options: AttackOptions) -> "InversionSettings":
        check_inversion_options(options)
        return cls(steps=options.inversion_steps, lr=options.inversion_lr, tv=options.inversion_tv,
                   batch_size=options.batch_size, surrogate_lr=options.lr)


def check_inversion_options(options: AttackOptions) -> None:
    """One-line :class:`ConfigError` for settings the optimisation cannot run with."""
    steps, lr, tv = options.inversion_steps, options.inversion_lr, options.inversion_tv
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"--inversion-steps must be a whole number >= 1, got {steps!r}")
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"--inversion-lr must be a finite number > 0, got {lr!r}")
    if not isinstance(tv, (int, float)) or not math.isfinite(tv) or tv < 0:
        raise ConfigError(f"--inversion-tv (the prior's weight) must be a finite number >= 0, got {tv!r}")


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of each image of ``x`` (N, C, H, W): the mean
    absolute difference of neighbouring pixels, (N,)."""
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).mean(1)
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(1)
    return dh + dw


def silenced_forward(client: nn.Module, draws: int = 1) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x (N, 3, H, W) -> f(x) (N, *z_shape)``: the client with its noise silenced,
    averaged over ``draws`` fresh draws of its other random ops."""
    others = [op for op in getattr(client, "random_ops", ()) if op not in getattr(client, "noise_ops", ())]

    def forward(x: torch.Tensor) -> torch.Tensor:
        e = client.encode(x)
        if not others or draws == 1:
            return client.reduce_silenced(e)
        return sum(client.reduce_silenced(e) for _ in range(draws)) / draws

    return forward


def check_differentiable(client: Any, probe: torch.Tensor) -> None:
    """A clear error when the client has no gradient path from image to ``z``
    (an exported ONNX model, or a client that leaves torch)."""
    why = ("the inversion attack differentiates through the client, so it needs the run's PyTorch weights "
           "(RUN_DIR/obfuscator.safetensors, loaded by privsplit evaluate); an exported ONNX client has no gradient")
    if not (isinstance(client, nn.Module) and hasattr(client, "encode") and hasattr(client, "reduce_silenced")):
        raise ConfigError(f"{why}: got a {type(client).__name__}")
    x = probe[:1].detach().clone().requires_grad_(True)
    try:
        out = silenced_forward(client)(x)
        ok = isinstance(out, torch.Tensor) and out.requires_grad
        if ok:
            (g,) = torch.autograd.grad(out.float().sum(), x, allow_unused=True)
            ok = g is not None
    except RuntimeError:
        ok = False
    if not ok:
        raise ConfigError(f"{why}: this client's output has no gradient with respect to its input image")


def relative_fit(out: torch.Tensor, z: torch.Tensor, power: torch.Tensor) -> torch.Tensor:
    """``||out - z||² / ||z||²`` per image, (N,); ``power`` is ``mean(z²)`` per image (N,)."""
    return (out.float() - z).flatten(1).pow(2).mean(1) / power


def _power(z: torch.Tensor) -> torch.Tensor:
    return z.flatten(1).pow(2).mean(1).clamp_min(1e-12)  # (N,)


def _stopped_falling(history: list[float]) -> bool:
    """The objective of the last window fell by less than :data:`STOP_TOL` (relative), or is fitted."""
    return bool(history) and (history[-1] < FITTED or (len(history) >= 2 and history[-1] > history[-2] * (1 - STOP_TOL)))


class StopWatch:
    """The mean objective over windows of :data:`CHECK_EVERY` steps, shown on a
    progress bar; says when it stopped falling (:func:`_stopped_falling`)."""

    def __init__(self, bar: Progress) -> None:
        self.bar, self.history, self._sum, self._n = bar, [], 0.0, 0

    def add(self, objective: float) -> bool:
        """Record one step's objective; True when the window it closes says stop."""
        self._sum, self._n = self._sum + objective, self._n + 1
        if self._n < CHECK_EVERY:
            return False
        self.history.append(self._sum / CHECK_EVERY)
        self._sum, self._n = 0.0, 0
        self.bar.set_postfix(objective=f"{self.history[-1]:.4g}")
        return _stopped_falling(self.history)


def descend(x: torch.Tensor, opts: list[torch.optim.Optimizer], forward: Callable[[torch.Tensor], torch.Tensor],
            z: torch.Tensor, power: torch.Tensor, tv: float) -> torch.Tensor:
    """One step of every optimiser in ``opts`` (the images' own first) on the
    relative fit plus ``tv`` x total variation of images ``x`` (B, 3, H, W),
    then ``x`` projected onto [0, 1]. Returns the per-image objective (B,), detached."""
    fit = relative_fit(forward(x), z, power)  # (B,)
    loss = fit + tv * total_variation(x) if tv else fit
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    loss.sum().backward()
    for opt in opts:
        opt.step()
    with torch.no_grad():
        x.clamp_(0, 1)  # projected onto the image range
    return loss.detach()


def invert(
    client: nn.Module,
    z: torch.Tensor,
    start: torch.Tensor,
    settings: InversionSettings,
    progress: bool | None = None,
    desc: str = "inversion",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Images whose silenced client output matches ``z`` (N, *z_shape), found
    batch by batch from ``start`` (1, 3, H, W) in [0, 1].

    Returns the images (N, 3, H, W) on the CPU and ``{"steps": steps run per batch,
    "converged": every batch stopped early, "fit": mean relative mismatch}``."""
    device = z.device
    start = start.to(device)
    check_differentiable(client, start)
    forward = silenced_forward(channels_last(client), settings.draws)
    out, steps_run, fits = [], [], []
    bs = batch_for(settings.batch_size, start.shape)
    n_batches = -(-len(z) // bs)
    for b, i in enumerate(range(0, len(z), bs)):
        zb = z[i : i + bs].float()  # (B, *z_shape)
        power = _power(zb)
        x = start_batch(start, len(zb))  # (B, 3, H, W)
        opt = torch.optim.Adam([x], lr=settings.lr)
        bar = Progress(range(settings.steps), desc=desc + (f" [batch {b + 1}/{n_batches}]" if n_batches > 1 else ""),
                       unit="step", enabled=progress)
        watch = StopWatch(bar)
        step = 0
        for step in bar:
            if watch.add(descend(x, [opt], forward, zb, power, settings.tv).mean().item()):
                break
        bar.close()
        steps_run.append(step + 1)
        with torch.no_grad():
            fits.append(relative_fit(forward(x), zb, power).sum().item())
        out.append(x.detach().cpu().contiguous())
    return torch.cat(out), {"steps": steps_run, "converged": all(s < settings.steps for s in steps_run),
                            "fit": sum(fits) / max(len(z), 1)}


def _images(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(255)


class InversionResult(ImageResult):
    """An optimisation attack's reconstructions (white-box inversion, model-space)."""

    def _heading(self) -> str:
        return self.record["label"]

    def warnings(self, run: dict[str, Any]) -> list[str]:
        qs = self.distinct_queries()
        return [f"{self.record['label']}{at_queries(q, len(qs) > 1)} used every step ({self.record['settings']['steps']}) "
                "with its objective still falling; rerun with more --inversion-steps"
                for q, v in qs.items() if not v["converged"]]

    def report_markdown(self, run: dict[str, Any]) -> list[str]:
        """Every metric at each number of queries beside the mean image."""
        a, by = self.record, self.distinct_queries()
        b = a["mean_image_baseline"]
        md = ["", f"## {a['label'][0].upper() + a['label'][1:]} (`{self.name}`)", "", f"Assumes {a['assumes']}.", "",
              "| metric | " + " | ".join(queries_words(q) for q in by) + " | mean training image (no z) |",
              "|---|" + "---|" * (len(by) + 1)]
        for k, label, fmt in IMAGE_METRICS:
            md.append(f"| {label} | " + " | ".join(num(v["metrics"].get(k), fmt) for v in by.values()) + f" | {num(b.get(k), fmt)} |")
        st = a["settings"]
        md += ["", f"- {a['note']}",
               f"- Adam, at most {st['steps']} steps per batch of {st['batch_size']} images, lr {st['lr']:g}, TV weight "
               f"{st['tv_weight']:g}; {st['stop']}; steps run: "
               + "; ".join(f"{q}: {', '.join(map(str, v['steps_run']))}" for q, v in by.items())]
        if a.get("grid"):
            md += ["", f"![originals (top) and reconstructions (bottom)]({a['grid']})"]
        return md


@ATTACKS.register("inversion")
class InversionAttack(Attack):
    """White-box inversion at every number of queries; scored like the decoder
    (:func:`privsplit.metrics.image_metrics`, beside the mean training image) and
    saved as a grid of originals above reconstructions."""

    label = "white-box inversion"
    needs_images = True
    needs_lpips = True
    reconstructs = True
    result_type = InversionResult
    grid_name = "inversion"

    @classmethod
    def check(cls, options: AttackOptions) -> None:
        check_inversion_options(options)

    def assumption(self) -> str:
        return ("the attacker owns the client (its trained weights) and the noise distribution: it optimises each image "
                "so that the client's noise-free output matches the received z averaged over k queries")

    def _invert(self, data: EvalData, options: AttackOptions, z: torch.Tensor, start: torch.Tensor,
                settings: InversionSettings, desc: str) -> tuple[torch.Tensor, dict[str, Any]]:
        return invert(data.client, z, start, settings, options.progress, desc)

    def run(self, data: EvalData, options: AttackOptions) -> InversionResult:
        assert data.x_train is not None and data.x_test is not None, f"{self.name} needs the images"
        settings = InversionSettings.from_options(options)
        check_differentiable(data.client, _images(data.x_train[:1]))
        original = _images(data.x_test.cpu())
        perceptual = perceptual_models(data, options)
        start = _images(data.x_train).mean(0, keepdim=True)  # (1, 3, H, W): the mean training image
        baseline = image_metrics(original, start.cpu().expand_as(original), **perceptual)
        by_queries = per_query(data, options, lambda q: self._at(data, options, q, original, start, settings,
                                                                 baseline, perceptual))
        others = [op for op in data.client.random_ops if op not in data.client.noise_ops]
        note = ("start: the mean training image; noise silenced, the received z averaged over k queries "
                "(inf: the noise-free features)")
        if others:
            note += (f"; the draws of {', '.join(others)} are unknown to the attacker (under consistent randomness too: "
                     f"they come from a key on the device), so every step draws them afresh")
        return InversionResult(self.name, {**by_queries["1"], **worst_image_verdict(by_queries), "mean_image_baseline": baseline,
                **attack_record(data, options, by_queries),
                "label": self.label, "assumes": self.assumption(), "note": note,
                "settings": {"steps": settings.steps, "lr": settings.lr, "tv_weight": settings.tv,
                             "batch_size": batch_for(settings.batch_size, original.shape), "draws_per_step": settings.draws,
                             "stop": f"a batch stops when its objective falls by less than {STOP_TOL:g} (relative) "
                                     f"over {CHECK_EVERY} steps"}})

    def _at(self, data: EvalData, options: AttackOptions, q: Query, original: torch.Tensor, start: torch.Tensor,
            settings: InversionSettings, baseline: dict[str, Any], perceptual: dict[str, LPIPS | None]) -> dict[str, Any]:
        torch.manual_seed(options.seed + 11)  # the fresh draws of shuffle / replace
        z = data.z_test(q)
        at = f" at {query_key(q)} quer{'y' if q == 1 else 'ies'}" if data.repeats_help else ""
        options.log(f"  {self.label}{at}: {len(z)} test images, at most {settings.steps} steps, "
                    f"lr {settings.lr:g}, TV weight {settings.tv:g}")
        recon, info = self._invert(data, options, z, start, settings, f"{self.name}{at}")
        metrics = image_metrics(original, recon, **perceptual)
        grid = None
        if options.out_dir is not None:
            name = f"{self.grid_name}.png" if q == 1 else f"{self.grid_name}_q{query_key(q)}.png"
            grid = save_grid(original[:8], recon[:8], Path(options.out_dir) / name)
        leaks = metrics["ssim"] > baseline["ssim"] + 0.05 and metrics["mse"] < baseline["mse"]
        return {
            "metrics": metrics,
            "steps_run": info["steps"],
            "feature_fit": info["fit"],  # mean ||f(x̂) - z||² / ||z||² at the end
            "converged": info["converged"],
            "verdict": "reconstructs" if leaks else "no better than the mean image",
            "grid": grid.name if grid else None,
            **({"surrogate_parameters": info["parameters"]} if "parameters" in info else {}),
        }
