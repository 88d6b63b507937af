"""``resnet18``: the whole network on the raw image, no privacy at all.

The practical bound of the benchmark: the client sends the image itself
(``z = x``; the obfuscator is the identity and has no parameters) and the
server runs a whole backbone (ResNet18 by default; ``model.backbone`` picks
another). Its privacy figure comes from an attacker that is itself a whole
backbone trained on the raw images (:meth:`WholeNetworkMethod.server_head`, also its attacker).

Settings: ``model.split`` must be ``none`` (nothing is cut), ``reduction``
must be empty; adversaries are allowed only as monitors (``train.lam=0``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.base import TaskInfo
from ..models.backbones import build_backbone
from ..obfuscator import ClientPart
from .base import METHODS, Method

# The split value of methods that send the (possibly noisy) image itself.
WHOLE = "none"


class RawImage(ClientPart):
    """The identity obfuscator: ``z = x``. No parameters."""

    def __init__(self, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.z_shape = self.image_shape

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x


class WholeNetworkMethod(Method):
    """Shared by the methods whose server runs a whole backbone on an image-sized ``z``."""

    splits = (WHOLE,)

    @property
    def splits_why(self) -> str:  # type: ignore[override]
        return f"{self.name} sends the image and runs the whole {self.cfg.model.backbone} on the server"

    def server_head(self, info: TaskInfo, num_classes: int) -> nn.Module:
        """A whole, fresh backbone on ``z`` (the raw or noisy image)."""
        return build_backbone(self.cfg.model.backbone, num_classes)


@METHODS.register("resnet18")
class ResNet18Baseline(WholeNetworkMethod):
    def client(self, info: TaskInfo) -> tuple[ClientPart, None]:
        return RawImage(info.image_shape), None
