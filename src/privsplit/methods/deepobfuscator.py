"""``deepobfuscator``: DeepObfuscator (Li et al., "DeepObfuscator: Obfuscating
Intermediate Representations with Privacy-Preserving Adversarial Learning on
Smartphones", 2019 / IoTDI 2021).

Parts, as in the paper: an obfuscator (encoder) on the device maps the image
to features ``z``; the cloud's classifier reads ``z`` for the task; two
simulated attackers read ``z`` too: an *attribute adversary* (classifier of
the private label) and a *reconstruction adversary* (a decoder that rebuilds
the image). Here the obfuscator is the backbone's front up to
``model.split``, the classifier its rest, the attribute adversary a fresh
copy of the rest and the decoder :class:`privsplit.models.Decoder`.

Losses: each adversary minimises its own loss (cross-entropy of the private
label; reconstruction MSE), and the obfuscator minimises
``task - lam * (w_attribute * CE_adversary + w_reconstruction * MSE_decoder)``:
it plays against both attackers at once, so its gradient from the
reconstruction term is the opposite of the decoder's own.

Followed: the obfuscator / classifier / two-adversary structure and the
min-max objective against both adversaries.
Simplified / assumed (the paper's full text was not available offline; the
details come from memory and the benchmark issue): the paper's networks are
VGG-style and its per-term weights are its own; here ResNet18 cut at the
split point, a transposed-convolution decoder, MSE as the reconstruction
loss (the paper reports MS-SSIM as its privacy metric) and weights
``w_attribute = w_reconstruction = 1`` by default (``method_args``); the
paper alternates the players' updates, here all update in the same step.

Settings (``method_args``): ``w_attribute``, ``w_reconstruction``.
``reduction`` must be empty; ``train.lam`` must be > 0. With no adversary
configured, an attribute adversary on ``private`` and a decoder are added;
a configured list must hold at least one of each kind.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import AdversaryConfig
from ..data.base import TaskInfo
from ..errors import ConfigError
from ..obfuscator import ClientPart
from ..reduction import Reduction
from .base import METHODS, Method, MethodArg, split_client

WEIGHT = {"attribute": "w_attribute", "decoder": "w_reconstruction"}  # method_args key by adversary kind


@METHODS.register("deepobfuscator")
class DeepObfuscator(Method):
    args = {
        "w_attribute": MethodArg(float, 1.0, "weight of the attribute adversary's cross-entropy in the obfuscator's loss"),
        "w_reconstruction": MethodArg(float, 1.0, "weight of the decoder's reconstruction MSE in the obfuscator's loss"),
    }

    adversaries_role = "required"
    default_adversaries = (AdversaryConfig("attribute", "attribute", "private"), AdversaryConfig("decoder", "decoder", "private"))
    required_kinds = ("attribute", "decoder")

    def client(self, info: TaskInfo) -> tuple[ClientPart, nn.Module]:
        if min(self.options.values()) < 0:
            raise ConfigError(f"deepobfuscator's weights must be >= 0, got {self.options}")
        # The obfuscator is the encoder alone: no reduction chain, hence no noise rule.
        return split_client(self, info, Reduction(), allow_no_noise=True)

    def privacy_term(self, adv: AdversaryConfig, output: torch.Tensor, x: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """``-w * adversary_loss``, ``w`` by the adversary's kind."""
        w = self.options[WEIGHT[adv.kind]]
        return -w * self.adversary_loss(adv, output, x, labels)
