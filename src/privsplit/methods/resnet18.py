"""``resnet18``: the whole network on the raw image, no privacy at all.

The practical bound of the benchmark: the client sends the image itself
(``z = x``; the obfuscator is the identity and has no parameters) and the
server runs a whole backbone (ResNet18 by default; ``model.backbone`` picks
another). Its privacy figure comes from an attacker that is itself a whole
backbone trained on the raw images (:meth:`ResNet18Baseline.attacker_head`).

Settings: ``model.split`` must be ``none`` (nothing is cut), ``reduction``
must be empty; adversaries are allowed only as monitors (``train.lam=0``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.base import TaskInfo
from ..models.backbones import build_backbone
from ..obfuscator import ClientPart
from .base import METHODS, Method, SplitModel

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

    def check(self) -> None:
        self.require_split((WHOLE,), f"{self.name} sends the image and runs the whole {self.cfg.model.backbone} on the server")
        self.require_no_reduction()
        self.require_task_only()

    def obfuscator(self, info: TaskInfo) -> nn.Module:
        raise NotImplementedError

    def build(self, info: TaskInfo) -> SplitModel:
        self.check()
        heads = self.task_heads(info, lambda n: build_backbone(self.cfg.model.backbone, n))
        obfuscator = self.obfuscator(info)
        return SplitModel(
            obfuscator,
            heads,
            {h.name: h.target for h in self.cfg.heads},
            self.build_adversaries(info, obfuscator.z_shape),
            {a.name: a for a in self.cfg.adversaries},
        )

    def attacker_head(self, info: TaskInfo, num_classes: int) -> nn.Module:
        """A whole, fresh backbone on ``z`` (the raw or noisy image)."""
        return build_backbone(self.cfg.model.backbone, num_classes)


@METHODS.register("resnet18")
class ResNet18Baseline(WholeNetworkMethod):
    name = "resnet18"

    def obfuscator(self, info: TaskInfo) -> nn.Module:
        return RawImage(info.image_shape)
