"""``ours``: the information-restriction obfuscator.

The encoder is the backbone's front up to the split point; the reduction
chain (frequency filter, noise, random replacement, shuffling, resizing) then
limits what ``z`` can carry. Trained with the task loss, optionally against
proxy adversaries (obfuscator loss = task - lam * adversary).
"""

from __future__ import annotations

from torch import nn

from ..data.base import TaskInfo
from ..reduction import Reduction
from ..obfuscator import ClientPart
from .base import METHODS, Method, split_client


@METHODS.register("ours")
class Ours(Method):
    name = "ours"
    uses_reduction = True
    adversaries_role = "optional"

    def client(self, info: TaskInfo) -> tuple[ClientPart, nn.Module]:
        return split_client(self, info, Reduction.from_config(self.cfg.reduction), self.cfg.model.allow_no_noise)
