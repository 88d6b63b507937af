"""``no_noise``: the split network trained with the task loss only.

The encoder is the backbone's front up to ``model.split`` (the benchmark uses
rn18_3 and rn18_4) and ``z`` is its raw output: no reduction chain, no
adversary term. It isolates what the chain of ``ours`` adds. The noise rule
of ``ours`` (a representation larger than the image needs noise) does not
apply: this baseline is the split network without noise by definition, so
early splits such as rn18_1 are accepted too.

Settings: ``reduction`` must be empty; adversaries are allowed only as
monitors (``train.lam=0``).
"""

from __future__ import annotations

from torch import nn

from ..data.base import TaskInfo
from ..reduction import Reduction
from ..obfuscator import ClientPart
from .base import METHODS, Method, split_client


@METHODS.register("no_noise")
class NoNoise(Method):
    def client(self, info: TaskInfo) -> tuple[ClientPart, nn.Module]:
        return split_client(self, info, Reduction(), allow_no_noise=True)
