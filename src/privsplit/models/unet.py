"""A small U-Net of our own: image in, image-sized representation out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Two down- and two up-sampling levels with skip connections.

    Maps ``(N, channels, H, W)`` to ``(N, channels, H, W)`` for any H, W >= 4.
    """

    def __init__(self, channels: int = 3, width: int = 16) -> None:
        super().__init__()
        w = width
        self.down0 = _block(channels, w)
        self.down1 = _block(w, 2 * w)
        self.bottom = _block(2 * w, 4 * w)
        self.up1 = _block(4 * w + 2 * w, 2 * w)
        self.up0 = _block(2 * w + w, w)
        self.out = nn.Conv2d(w, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.down0(x)
        s1 = self.down1(F.max_pool2d(s0, 2))
        b = self.bottom(F.max_pool2d(s1, 2))
        # Upsample to the skip's exact size so odd sizes (e.g. 178 -> 89 -> 44) work.
        u1 = self.up1(torch.cat([F.interpolate(b, size=s1.shape[-2:]), s1], 1))
        u0 = self.up0(torch.cat([F.interpolate(u1, size=s0.shape[-2:]), s0], 1))
        return self.out(u0)
