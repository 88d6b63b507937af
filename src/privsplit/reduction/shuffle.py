"""Random shuffling of spatial positions."""

from __future__ import annotations

import torch

from .base import OPS, ReductionOp, check_fraction, uniform_like


def taking_part(hw: int, fraction: float) -> int:
    """How many of ``hw`` positions a shuffle of ``fraction`` permutes (fewer than 2: none)."""
    k = int(round(fraction * hw))
    return k if k >= 2 else 0


def random_shuffle(z: torch.Tensor, fraction: float = 1.0, u: torch.Tensor | None = None) -> torch.Tensor:
    """Permute a random ``fraction`` of the spatial positions of each sample
    among themselves; all channels of a position move together. ``z`` is
    (N, C, H, W); each sample gets its own permutation, drawn fresh or from the
    uniforms ``u`` (N, H*W + k) for the k positions taking part."""
    c, h, w = (int(s) for s in z.shape[1:])  # fixed by the image size (constants when traced)
    hw = h * w
    k = taking_part(hw, fraction)
    if k == 0:
        return z
    flat = z.flatten(2)  # (N, C, HW)
    keys = uniform_like(flat[:, 0, :], None if u is None else u[:, :hw])  # (N, HW)
    chosen = keys.argsort(1)[:, :k]  # (N, k) positions taking part
    order = uniform_like(flat[:, 0, :k], None if u is None else u[:, hw:]).argsort(1)  # (N, k) where each goes
    source = torch.arange(hw, device=z.device).expand_as(keys)
    source = source.scatter(1, chosen, chosen.gather(1, order))  # (N, HW) index read for each output position
    return flat.gather(2, source.unsqueeze(1).expand(-1, c, hw)).reshape(z.shape)


@OPS.register("shuffle")
class RandomShuffle(ReductionOp):
    """Shuffle spatial positions of ``z`` at random.

    Args:
        fraction: share of the H*W positions that take part, in [0, 1].
    """

    random = True
    needs_spatial = True

    def __init__(self, fraction: float = 1.0) -> None:
        super().__init__()
        self.fraction = check_fraction("shuffle.fraction", fraction)

    def draws(self, in_shape: tuple[int, ...]) -> int:
        hw = in_shape[1] * in_shape[2]
        k = taking_part(hw, self.fraction)
        return hw + k if k else 0

    def forward(self, z: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        return random_shuffle(z, self.fraction, u)

    def extra_repr(self) -> str:
        return f"fraction={self.fraction}"
