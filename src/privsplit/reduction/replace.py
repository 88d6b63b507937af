"""Random value replacement."""

from __future__ import annotations

import torch

from .base import OPS, ReductionOp, check_fraction, rand, randn


def random_replace(z: torch.Tensor, fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace a random ``fraction`` of the elements of each sample with values
    drawn from a normal with that sample's own mean and standard deviation, so
    replaced values cannot be told apart by their scale."""
    flat = z.flatten(1)  # (N, D)
    mean = flat.mean(1, keepdim=True).detach()
    std = flat.std(1, keepdim=True).detach() if flat.shape[1] > 1 else torch.ones_like(mean)
    values = mean + std * randn(flat.shape, flat, generator)
    mask = rand(flat.shape, flat, generator) < fraction
    return torch.where(mask, values, flat).view_as(z)


@OPS.register("replace")
class RandomReplace(ReductionOp):
    """Replace a random ``fraction`` of ``z``'s elements with random values.

    Args:
        fraction: share of elements replaced at each call, in [0, 1].
    """

    name = "replace"
    random = True

    def __init__(self, fraction: float) -> None:
        super().__init__()
        self.fraction = check_fraction("replace.fraction", fraction)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return random_replace(z, self.fraction)

    def extra_repr(self) -> str:
        return f"fraction={self.fraction}"
