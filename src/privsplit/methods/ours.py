"""``ours``: the information-restriction obfuscator.

The encoder is the backbone's front up to the split point; the reduction
chain (frequency filter, noise, random replacement, shuffling, resizing) then
limits what ``z`` can carry. Trained with the task loss, optionally against
proxy adversaries (obfuscator loss = task - lam * adversary).
"""

from __future__ import annotations

from ..data.base import TaskInfo
from ..reduction import Reduction
from .base import METHODS, Method, SplitModel


@METHODS.register("ours")
class Ours(Method):
    name = "ours"

    def build(self, info: TaskInfo) -> SplitModel:
        return self.build_split(info, Reduction.from_config(self.cfg.reduction), self.cfg.model.allow_no_noise)
