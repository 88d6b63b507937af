"""``disco``: DISCO (Singh et al., "DISCO: Dynamic and Invariant Sensitive
Channel Obfuscation for deep neural networks", CVPR 2021).

Parts, as in the paper: on the client, the backbone's front (up to
``model.split``) computes the activation ``a`` and a *pruner* network reads
``a`` and scores each of its ``C`` channels, per sample (the pruning is
dynamic: each image keeps its own channels). The ``k = C - round(ratio * C)``
best-scored channels are kept and the others set to zero; the pruned
activation ``z = a * mask`` goes to the server, whose head is the backbone's
rest. A proxy adversary (a classifier of the private label on ``z``) is
trained alongside; the client (front and pruner) minimises
``task - lam * adversary`` so that the kept channels are the ones that serve
the task without revealing the private label.

Gradients through the hard top-k: straight-through. The forward pass uses the
exact 0/1 mask; the backward pass uses the gradient of ``sigmoid(scores)``,
so the pruner learns which channels to keep.

Followed: per-sample channel pruning by a learned pruner on the split
activation, a fixed pruning ratio, training against a proxy attribute
adversary with the task - lam * adversary objective.
Simplified / assumed (the paper's full text was not available offline; the
details come from memory and the benchmark issue): the pruner's architecture
(conv 3x3 -> ReLU -> global average pool -> linear, or a 2-layer MLP when
``z`` is a vector, as at rn18_4); the straight-through estimator for the
top-k (the paper's exact relaxation may differ); the encoder and the pruner
share one optimiser and one objective (the paper may train the pruner's
privacy objective alone); all players update in the same step.

Settings (``method_args``): ``ratio`` (share of channels pruned, default
0.5). ``reduction`` must be empty; ``train.lam`` must be > 0. With no
adversary configured, one attribute adversary on ``private`` is added.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import AdversaryConfig
from ..data.base import TaskInfo
from ..errors import ConfigError
from ..models.backbones import output_shape, split_backbone
from ..obfuscator import ClientPart
from .base import METHODS, Method, MethodArg


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """0/1 mask of the ``k`` largest scores per row, with a straight-through
    gradient of ``sigmoid(scores)``; ``scores`` ``(N, C)`` -> mask ``(N, C)``."""
    hard = torch.zeros_like(scores).scatter_(1, scores.topk(k, dim=1).indices, 1.0)
    soft = torch.sigmoid(scores)
    return hard + (soft - soft.detach())


class Pruner(nn.Module):
    """Scores the channels of an activation: ``(N, C, H, W)`` or ``(N, C)`` -> ``(N, C)``."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        c = shape[0]
        if len(shape) == 3:
            self.net: nn.Module = nn.Sequential(
                nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(c, c)
            )
        elif len(shape) == 1:
            self.net = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, c))
        else:
            raise ConfigError(f"disco prunes channels of a (C, H, W) or (C,) activation, got shape {shape}")

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.net(a)


class PrunedEncoder(ClientPart):
    """The client of DISCO: ``z = a * top_k(pruner(a))`` with ``a = encoder(x)``."""

    def __init__(self, encoder: nn.Module, image_shape: tuple[int, int, int], ratio: float) -> None:
        super().__init__()
        if not 0 <= ratio < 1:
            raise ConfigError(f"method_args.ratio of disco is the share of channels pruned and must be in [0, 1), got {ratio}")
        self.encoder = encoder
        self.image_shape = tuple(image_shape)
        self.z_shape = output_shape(encoder, self.image_shape)
        self.pruner = Pruner(self.z_shape)
        channels = self.z_shape[0]
        self.keep = max(1, channels - round(ratio * channels))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        a = self.encoder(x)
        mask = top_k_mask(self.pruner(a), self.keep)  # (N, C)
        return a * mask.view(*mask.shape, *([1] * (a.dim() - 2)))  # broadcast over H, W

    def extra_repr(self) -> str:
        return f"keep={self.keep} of {self.z_shape[0]} channels"


@METHODS.register("disco")
class Disco(Method):
    args = {"ratio": MethodArg(float, 0.5, "share of the channels pruned per sample, in [0, 1)")}

    adversaries_role = "required"
    default_adversaries = (AdversaryConfig("adversary", "attribute", "private"),)

    def client(self, info: TaskInfo) -> tuple[ClientPart, nn.Module]:
        cfg = self.cfg
        encoder, first = split_backbone(cfg.model.backbone, cfg.model.split, info.num_classes(cfg.heads[0].target))
        return PrunedEncoder(encoder, info.image_shape, self.options["ratio"]), first
