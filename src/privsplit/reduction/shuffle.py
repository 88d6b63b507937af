"""Random shuffling of spatial positions."""

from __future__ import annotations

import torch

from .base import OPS, ReductionOp, check_fraction, rand


def random_shuffle(z: torch.Tensor, fraction: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Permute a random ``fraction`` of the spatial positions of each sample
    among themselves; all channels of a position move together. ``z`` is
    (N, C, H, W); each sample gets its own permutation."""
    n, c, h, w = z.shape
    hw = h * w
    k = int(round(fraction * hw))
    flat = z.reshape(n, c, hw)
    if k < 2:
        return z
    chosen = rand((n, hw), z, generator).argsort(1)[:, :k]  # (N, k) positions taking part
    order = rand((n, k), z, generator).argsort(1)  # (N, k) where each goes
    source = torch.arange(hw, device=z.device).expand(n, hw).clone()
    source.scatter_(1, chosen, chosen.gather(1, order))  # (N, HW) index read for each output position
    return flat.gather(2, source.unsqueeze(1).expand(n, c, hw)).view(n, c, h, w)


@OPS.register("shuffle")
class RandomShuffle(ReductionOp):
    """Shuffle spatial positions of ``z`` at random.

    Args:
        fraction: share of the H*W positions that take part, in [0, 1].
    """

    name = "shuffle"
    random = True
    needs_spatial = True

    def __init__(self, fraction: float = 1.0) -> None:
        super().__init__()
        self.fraction = check_fraction("shuffle.fraction", fraction)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return random_shuffle(z, self.fraction)

    def extra_repr(self) -> str:
        return f"fraction={self.fraction}"
