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
    ``(max(D/4, 16), 2, 2)`` map by a linear layer first). Output is in [0, 1].

    Attackers use two options (the proxy adversaries of training keep the
    plain design, so saved runs still load):

    - ``normalize_input``: a batch norm on ``z`` first, so the decoder learns
      equally well whatever the scale of ``z`` (raw features can be large; the
      first batch norm is otherwise after the first up-sampling).
    - ``taper``: ``2 * width`` channels at the coarsest up-sampling, halving at
      each finer one (never under 32), as image decoders are usually built: more
      capacity where the representation is coarse, and at 178 px about half the
      compute of ``width`` channels at every resolution.
    """

    def __init__(
        self,
        z_shape: tuple[int, ...],
        image_shape: tuple[int, int, int],
        width: int = 64,
        normalize_input: bool = False,
        taper: bool = False,
    ) -> None:
        super().__init__()
        self.z_shape = tuple(z_shape)
        self.image_shape = tuple(image_shape)
        norm_cls = nn.BatchNorm1d if len(self.z_shape) == 1 else nn.BatchNorm2d
        self.norm: nn.Module = norm_cls(self.z_shape[0]) if normalize_input else nn.Identity()
        if len(self.z_shape) == 1:
            self.start = (max(self.z_shape[0] // 4, 16), 2, 2)
            self.lift: nn.Module = nn.Linear(self.z_shape[0], math.prod(self.start))
        else:
            self.start = self.z_shape
            self.lift = nn.Identity()
        c, h, _ = self.start
        target = image_shape[1]
        ups = max(0, math.ceil(math.log2(max(target / h, 1))))
        # Channels after the first convolution, then after each up-sampling.
        widths = [max(32, (2 * width) >> max(i - 1, 0)) if taper else width for i in range(ups + 1)]
        layers: list[nn.Module] = [nn.Conv2d(c, widths[0], 3, padding=1), nn.ReLU(inplace=True)]
        for w_in, w_out in zip(widths, widths[1:]):
            layers += [
                nn.ConvTranspose2d(w_in, w_out, 4, stride=2, padding=1),
                nn.BatchNorm2d(w_out),
                nn.ReLU(inplace=True),
            ]
        self.body = nn.Sequential(*layers)
        self.to_image = nn.Conv2d(widths[-1], image_shape[0], 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.lift(self.norm(z.flatten(1) if len(self.z_shape) == 1 else z))
        x = x.view(x.shape[0], *self.start)
        x = self.body(x)
        # Up-sampling by 2 overshoots sizes that are not powers of 2: land exactly.
        x = F.interpolate(x, size=self.image_shape[1:], mode="bilinear", align_corners=False)
        return torch.sigmoid(self.to_image(x))
