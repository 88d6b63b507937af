"""Image decoder: reconstructs the image from a representation ``z``.

Used as the proxy reconstruction adversary in training and, freshly
initialised, as the reconstruction attacker afterwards.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Decoder(nn.Module):
    """Transposed-convolution upsampler from ``z_shape`` to ``image_shape``.

    ``z_shape`` is ``(C, H, W)`` or ``(D,)`` (a pooled vector, reshaped to a
    ``(D/4 or 64, 2, 2)`` map by a linear layer first). Output is in [0, 1].
    """

    def __init__(self, z_shape: tuple[int, ...], image_shape: tuple[int, int, int], width: int = 64) -> None:
        super().__init__()
        self.z_shape = tuple(z_shape)
        self.image_shape = tuple(image_shape)
        if len(self.z_shape) == 1:
            self.start = (max(self.z_shape[0] // 4, 16), 2, 2)
            self.lift: nn.Module = nn.Linear(self.z_shape[0], math.prod(self.start))
        else:
            self.start = self.z_shape
            self.lift = nn.Identity()
        c, h, _ = self.start
        target = image_shape[1]
        ups = max(0, math.ceil(math.log2(max(target / h, 1))))
        layers: list[nn.Module] = [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(ups):
            layers += [
                nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
        self.body = nn.Sequential(*layers)
        self.to_image = nn.Conv2d(width, image_shape[0], 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.lift(z.flatten(1) if len(self.z_shape) == 1 else z)
        x = x.view(x.shape[0], *self.start)
        x = self.body(x)
        # Up-sampling by 2 overshoots sizes that are not powers of 2: land exactly.
        x = F.interpolate(x, size=self.image_shape[1:], mode="bilinear", align_corners=False)
        return torch.sigmoid(self.to_image(x))
