"""Additive Gaussian noise, applied at inference too."""

from __future__ import annotations

import math

import torch

from .base import OPS, ReductionOp, check_choice, check_nonnegative, normal_like

NORMALIZE = ("none", "rms")


def gaussian_noise(z: torch.Tensor, sigma: float, normalize: str = "none", u: torch.Tensor | None = None) -> torch.Tensor:
    """``z + N(0, sigma^2)``; the normals are fresh, or made from the uniforms ``u``
    (N, 2 * numel per sample).

    With ``normalize="rms"`` each sample is first scaled to unit root mean
    square, so ``sigma`` is a fixed noise-to-signal ratio: otherwise an encoder
    can defeat any fixed ``sigma`` by scaling its output up.
    """
    if normalize == "rms":
        rms = z.flatten(1).pow(2).mean(1).add(1e-12).sqrt()  # (N,)
        z = z / rms.view(-1, *([1] * (z.dim() - 1)))
    if sigma == 0:
        return z
    return z + sigma * normal_like(z, u)


@OPS.register("noise")
class GaussianNoise(ReductionOp):
    """Gaussian noise ``z + N(0, sigma^2)``; part of the deployed obfuscator.

    Args:
        sigma: standard deviation, in feature units (after normalisation when
            ``normalize="rms"``). The paper uses 3840 on raw features.
        normalize: "rms" (default) fixes each sample's power to 1 first;
            "none" adds the noise to the raw features.
    """

    random = True
    additive_noise = True

    @property
    def adds_noise(self) -> bool:
        return self.sigma > 0  # sigma 0 adds nothing: it does not satisfy the noise rule

    def __init__(self, sigma: float, normalize: str = "rms") -> None:
        super().__init__()
        self.sigma = check_nonnegative("noise.sigma", sigma)
        self.normalize = check_choice("noise.normalize", normalize, NORMALIZE)

    def draws(self, in_shape: tuple[int, ...]) -> int:
        return 2 * math.prod(in_shape) if self.sigma > 0 else 0

    def forward(self, z: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        return gaussian_noise(z, self.sigma, self.normalize, u)

    def silenced(self) -> "GaussianNoise":
        return GaussianNoise(0.0, self.normalize)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, normalize={self.normalize}"
