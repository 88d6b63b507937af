"""Small classifiers on ``z`` of families unlike the backbone's rest.

They serve as fresh attackers after training (:mod:`privsplit.attacks.attribute`)
and as proxy adversaries during it (``adversaries: [{family: linear}]``): an
obfuscator trained against one network shape can leave the private attribute
readable by another, so both the proxy and the measure need several families.

* ``linear``: logistic regression on standardised, unpooled ``z``;
* ``mlp``: an MLP on ``z`` average-pooled to at most 4x4 positions;
* ``mlp_flat``: the same MLP on standardised, unpooled ``z``.

Standardising is a batch norm without affine weights: per-value mean and
variance of the training ``z`` (running averages at test time), so a ``z``
whose scale carries no information cannot hide behind it.

Example:
    >>> probe = build_probe("linear", (256, 2, 2), num_classes=10)
    >>> probe(torch.zeros(4, 256, 2, 2)).shape
    torch.Size([4, 10])
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..registry import Registry


def _mlp(n_in: int, num_classes: int, hidden: int) -> list[nn.Module]:
    return [
        nn.Linear(n_in, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(0.2),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    ]


class PooledMLP(nn.Module):
    """MLP on ``z`` average-pooled to at most 4x4 positions."""

    def __init__(self, z_shape: tuple[int, ...], num_classes: int, hidden: int = 512) -> None:
        super().__init__()
        if len(z_shape) == 3:
            c, h, w = z_shape
            self.pool: nn.Module = nn.AdaptiveAvgPool2d((min(h, 4), min(w, 4)))
            n_in = c * min(h, 4) * min(w, 4)
        else:
            self.pool = nn.Identity()
            n_in = math.prod(z_shape)
        self.net = nn.Sequential(nn.Flatten(1), nn.LayerNorm(n_in), *_mlp(n_in, num_classes, hidden))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.pool(z))


class FlatProbe(nn.Module):
    """A linear layer (``hidden=0``) or an MLP on standardised, unpooled ``z``.

    Attributes:
        lr_scale: multiplies the learning rate it is trained with. A linear probe
            at Adam's 1e-3 is far from its optimum after a few epochs (measured:
            0.52 vs 0.79 test accuracy on a planted label after 260 steps); 10x
            reaches it, as a logistic regression fitted to convergence would.
    """

    def __init__(self, z_shape: tuple[int, ...], num_classes: int, hidden: int = 0) -> None:
        super().__init__()
        self.lr_scale = 10.0 if hidden == 0 else 1.0
        n_in = math.prod(z_shape)
        layers = [nn.Linear(n_in, num_classes)] if hidden == 0 else _mlp(n_in, num_classes, hidden)
        self.net = nn.Sequential(nn.Flatten(1), nn.BatchNorm1d(n_in, affine=False), *layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


PROBES: Registry[Callable[[tuple[int, ...], int], nn.Module]] = Registry("probe family")
PROBES.register("linear")(lambda: lambda z_shape, k: FlatProbe(z_shape, k))
PROBES.register("mlp")(lambda: PooledMLP)
PROBES.register("mlp_flat")(lambda: lambda z_shape, k: FlatProbe(z_shape, k, hidden=512))


def build_probe(family: str, z_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A fresh probe of ``family`` (see :data:`PROBES`) reading ``z`` of ``z_shape``."""
    return PROBES.create(family)(tuple(z_shape), num_classes)
