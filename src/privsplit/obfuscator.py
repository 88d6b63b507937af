"""The obfuscator: the encoder followed by the reduction chain. It is the only
part of the network that is deployed to the client."""

from __future__ import annotations

import torch
from torch import nn

from .models.backbones import output_shape
from .reduction import Reduction


class Obfuscator(nn.Module):
    """``z = reduction(encoder(x))``.

    Args:
        encoder: the backbone's front.
        reduction: the information-reduction chain (may be empty).
        image_shape: (C, H, W) of the input images; used to check the chain.
        allow_no_noise: accept a chain that breaks the noise rule
            (see :meth:`Reduction.check`).

    Example:
        >>> from privsplit.models import split_backbone
        >>> enc, _ = split_backbone("resnet18", "rn18_3", num_classes=2)
        >>> obf = Obfuscator(enc, Reduction.from_config([{"op": "noise", "sigma": 2}]), (3, 32, 32))
        >>> obf.z_shape
        (256, 2, 2)
    """

    def __init__(
        self,
        encoder: nn.Module,
        reduction: Reduction,
        image_shape: tuple[int, int, int],
        allow_no_noise: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.reduction = reduction
        self.image_shape = tuple(image_shape)
        self.encoder_shape = output_shape(encoder, self.image_shape)
        self.z_shape = reduction.check(self.encoder_shape, self.image_shape, allow_no_noise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(self.encoder(x))
