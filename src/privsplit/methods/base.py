"""The interface every method implements, and the model all of them build.

A method says how to build its parts and what its losses are; the one
training engine (:mod:`privsplit.train.engine`) runs every method.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import AdversaryConfig, Config
from ..data.base import TaskInfo
from ..errors import ConfigError
from ..models.backbones import build_head
from ..models.decoder import Decoder
from ..registry import Registry

ADVERSARY_KINDS = ("attribute", "decoder")


class SplitModel(nn.Module):
    """Obfuscator (client), task heads (server) and proxy adversaries (training only).

    Weights are saved under the prefixes ``obfuscator.``, ``heads.<name>.``
    and ``adversaries.<name>.``, so the client and the server each load only
    their own part.
    """

    def __init__(
        self,
        obfuscator: nn.Module,
        heads: dict[str, nn.Module],
        head_targets: dict[str, str],
        adversaries: dict[str, nn.Module] | None = None,
        adversary_configs: dict[str, AdversaryConfig] | None = None,
    ) -> None:
        super().__init__()
        self.obfuscator = obfuscator
        self.heads = nn.ModuleDict(heads)
        self.head_targets = dict(head_targets)
        self.adversaries = nn.ModuleDict(adversaries or {})
        self.adversary_configs = dict(adversary_configs or {})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every head for images ``x``."""
        z = self.obfuscator(x)
        return {name: head(z) for name, head in self.heads.items()}


class Method:
    """Base class of the methods: ``ours`` and the baselines.

    Subclasses implement :meth:`build`; they may override the losses.
    """

    name: ClassVar[str]

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def build(self, info: TaskInfo) -> SplitModel:
        raise NotImplementedError

    def task_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target)

    def adversary_loss(self, adv: AdversaryConfig, output: torch.Tensor, x: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the adversary minimises: cross-entropy on its target, or the
        reconstruction MSE for a decoder."""
        if adv.kind == "decoder":
            return F.mse_loss(output, x)
        return F.cross_entropy(output, labels[adv.target])

    def privacy_term(self, adv: AdversaryConfig, output: torch.Tensor, x: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """Added to the obfuscator's loss: by default ``-adversary_loss`` (the
        obfuscator wants the adversary to fail); scaled by ``train.lam``."""
        return -self.adversary_loss(adv, output, x, labels)

    # Helpers shared by methods.

    def build_adversaries(self, info: TaskInfo, z_shape: tuple[int, ...]) -> dict[str, nn.Module]:
        m = self.cfg.model
        out: dict[str, nn.Module] = {}
        for adv in self.cfg.adversaries:
            if adv.kind not in ADVERSARY_KINDS:
                raise ConfigError(f"unknown adversary kind {adv.kind!r}; valid choices: {', '.join(ADVERSARY_KINDS)}")
            if adv.kind == "attribute":
                out[adv.name] = build_head(m.backbone, m.split, info.num_classes(adv.target))
            else:
                out[adv.name] = Decoder(z_shape, info.image_shape)
        return out


def unique_names(kind: str, names: list[str]) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{kind} names must be unique; repeated: {', '.join(dup)}")


METHODS: Registry[type[Method]] = Registry("method")
