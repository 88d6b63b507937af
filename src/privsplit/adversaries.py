"""Kinds of proxy adversary: how each is built, what it minimises and how it is scored.

A kind is registered once here, below the config that checks it (so config imports nothing
above it); methods, the training engine and the config look it up instead of testing the
kind's name.

Example:
    >>> ADVERSARIES.create("decoder").metric
    'mse'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .models.decoder import Decoder
from .models.probes import build_probe
from .registry import Registry

if TYPE_CHECKING:
    from .config import AdversaryConfig
    from .data.base import TaskInfo
    from .methods.base import Method

Labels = dict[str, torch.Tensor]


@dataclass(frozen=True)
class AdversaryKind:
    """One kind of proxy adversary.

    Attributes:
        build: ``(method, info, z_shape, adv) -> module`` reading what the adversary sees.
        loss: ``(output, x, labels, adv) -> loss`` the adversary minimises.
        metric: name of its test metric in the training log (``acc``, ``mse``).
        score: ``(output, x, labels, adv) -> (N,)`` per-sample values whose mean is the metric.
        classifies: it predicts a label (an ``entropy`` objective can apply to it).
    """

    build: Callable[["Method", "TaskInfo", tuple[int, ...], "AdversaryConfig"], nn.Module]
    loss: Callable[[torch.Tensor, torch.Tensor, Labels, "AdversaryConfig"], torch.Tensor]
    metric: str
    score: Callable[[torch.Tensor, torch.Tensor, Labels, "AdversaryConfig"], torch.Tensor]
    classifies: bool


ADVERSARIES: Registry[AdversaryKind] = Registry("adversary kind")

# Built once: the engine looks a kind up at every step.
ATTRIBUTE = AdversaryKind(
    # The method's attacker network on z (for a cut backbone: the backbone's rest), or a probe.
    build=lambda method, info, z_shape, adv: (
        method.attacker_head(info, info.num_classes(adv.target)) if adv.family == "head"
        else build_probe(adv.family, z_shape, info.num_classes(adv.target))
    ),
    loss=lambda out, x, labels, adv: F.cross_entropy(out, labels[adv.target]),
    metric="acc",
    score=lambda out, x, labels, adv: (out.argmax(1) == labels[adv.target]).float(),
    classifies=True,
)
DECODER = AdversaryKind(
    # Reconstructs the image from z.
    build=lambda method, info, z_shape, adv: Decoder(z_shape, info.image_shape),
    loss=lambda out, x, labels, adv: F.mse_loss(out, x),
    metric="mse",
    score=lambda out, x, labels, adv: (out - x).pow(2).flatten(1).mean(1),
    classifies=False,
)
ADVERSARIES.register("attribute")(lambda: ATTRIBUTE)
ADVERSARIES.register("decoder")(lambda: DECODER)
