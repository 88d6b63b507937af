"""``ours``: the information-restriction obfuscator.

The encoder is the backbone's front up to the split point; the reduction
chain (frequency filter, noise, random replacement, shuffling, resizing) then
limits what ``z`` can carry. Trained with the task loss, optionally against
proxy adversaries (obfuscator loss = task - lam * adversary).
"""

from __future__ import annotations

from ..data.base import TaskInfo
from ..models.backbones import build_head, split_backbone
from ..obfuscator import Obfuscator
from ..reduction import Reduction
from .base import METHODS, Method, SplitModel, unique_names


@METHODS.register("ours")
class Ours(Method):
    name = "ours"

    def build(self, info: TaskInfo) -> SplitModel:
        cfg = self.cfg
        unique_names("head", [h.name for h in cfg.heads])
        unique_names("adversary", [a.name for a in cfg.adversaries])
        first = cfg.heads[0] if cfg.heads else None
        encoder, head = split_backbone(cfg.model.backbone, cfg.model.split, info.num_classes(first.target if first else "utility"))
        obfuscator = Obfuscator(encoder, Reduction.from_config(cfg.reduction), info.image_shape, cfg.model.allow_no_noise)
        heads = {}
        for i, h in enumerate(cfg.heads):
            heads[h.name] = head if i == 0 else build_head(cfg.model.backbone, cfg.model.split, info.num_classes(h.target))
        return SplitModel(
            obfuscator,
            heads,
            {h.name: h.target for h in cfg.heads},
            self.build_adversaries(info, obfuscator.z_shape),
            {a.name: a for a in cfg.adversaries},
        )
