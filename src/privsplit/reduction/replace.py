"""Random value replacement."""

from __future__ import annotations

import math

import torch

from .base import OPS, ReductionOp, check_fraction, normal_like, uniform_like


def random_replace(z: torch.Tensor, fraction: float, u: torch.Tensor | None = None) -> torch.Tensor:
    """Replace a random ``fraction`` of the elements of each sample with values
    drawn from a normal with that sample's own mean and standard deviation, so
    replaced values cannot be told apart by their scale. ``u``: uniforms
    (N, 3 * numel per sample) instead of fresh draws (2 per normal, 1 per mask bit)."""
    flat = z.flatten(1)  # (N, D)
    d = int(flat.shape[1])
    mean = flat.mean(1, keepdim=True).detach()
    std = flat.std(1, keepdim=True).detach() if d > 1 else torch.ones_like(mean)
    values = mean + std * normal_like(flat, None if u is None else u[:, : 2 * d])
    mask = uniform_like(flat, None if u is None else u[:, 2 * d :]) < fraction
    return torch.where(mask, values, flat).reshape(z.shape)


@OPS.register("replace")
class RandomReplace(ReductionOp):
    """Replace a random ``fraction`` of ``z``'s elements with random values.

    Args:
        fraction: share of elements replaced at each call, in [0, 1].
    """

    random = True

    def __init__(self, fraction: float) -> None:
        super().__init__()
        self.fraction = check_fraction("replace.fraction", fraction)

    def draws(self, in_shape: tuple[int, ...]) -> int:
        return 3 * math.prod(in_shape)

    def forward(self, z: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        return random_replace(z, self.fraction, u)

    def extra_repr(self) -> str:
        return f"fraction={self.fraction}"
