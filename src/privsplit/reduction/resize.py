"""Spatial resizing."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import OPS, ReductionOp, check_choice

MODES = ("bilinear", "nearest", "area", "bicubic")


def resize(z: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize (N, C, H, W) to (N, C, *size)."""
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(z, size=size, mode=mode, align_corners=False)
    return F.interpolate(z, size=size, mode=mode)


@OPS.register("resize")
class Resize(ReductionOp):
    """Resize the representation to ``size`` (an int for square, or [h, w]).

    Args:
        size: output spatial size.
        mode: interpolation, one of bilinear, nearest, area, bicubic.
    """

    needs_spatial = True

    def __init__(self, size: int | list[int], mode: str = "bilinear") -> None:
        super().__init__()
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if len(hw) != 2 or not all(isinstance(s, int) and 1 <= s <= 4096 for s in hw):
            raise ConfigError(f"resize.size must be a whole number from 1 to 4096, or [height, width] of such, got {size!r}")
        self.size: tuple[int, int] = hw  # type: ignore[assignment]
        self.mode = check_choice("resize.mode", mode, MODES)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (super().output_shape(in_shape)[0], *self.size)

    def forward(self, z: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        return resize(z, self.size, self.mode)

    def extra_repr(self) -> str:
        return f"size={self.size}, mode={self.mode}"
