"""``maxent``: MaxEnt-ARL (Roy & Boddeti, "Mitigating Information Leakage in
Image Representations: A Maximum Entropy Approach", CVPR 2019).

Parts, as in the paper: an encoder ``E`` maps the image to an embedding
``z = E(x)``; a target predictor ``T`` and an adversary ``A`` read ``z``.
Here ``E`` is a whole backbone (ResNet18 by default) whose last layer emits
a ``d``-dimensional vector (``d`` = 128 for cifar10 and digits, 256 for the
face sets), and ``T`` and ``A`` are small MLPs (``d -> hidden -> classes``).

Losses, as in the paper's three-player game:
  * ``A`` minimises the cross-entropy of the private label (it is a
    classifier of it);
  * ``E`` and ``T`` minimise the task cross-entropy plus a term that makes
    the adversary's prediction *maximally uncertain*, not wrong: the paper's
    key change from the usual ``-CE`` of adversarial representation learning,
    which can leak the label by being confidently wrong. The term here is
    ``KL(softmax(A(z)) || uniform) = log K - H(softmax(A(z)))`` (mean over the
    batch), i.e. the negative entropy shifted to be >= 0; its gradient is
    that of ``-H``.

Weighting: the paper writes the encoder's objective as
``(1 - alpha) * task - alpha * entropy`` with ``alpha`` in [0, 1); the shared
engine minimises ``task + lam * privacy_term``, which is the same objective
divided by ``1 - alpha``, so ``lam = alpha / (1 - alpha)`` (``alpha = 0.5``
is ``lam = 1``, the value of ``configs/cifar10_maxent.yaml``; the engine's
default ``lam = 0.01`` is far weaker than the paper's range).

Followed: the three parts, the entropy objective of the encoder, the CE
objective of the adversary, the ResNet18 encoder with a d-dimensional output.
Simplified / assumed (the paper's full text was not available offline; the
details come from memory and the benchmark issue): the paper alternates the
updates of the players, here they update in the same step (the adversary on
a detached ``z``, like every method of this engine); the predictor and
adversary MLPs have one hidden layer of width ``hidden`` (default ``d``);
no normalisation of the embedding.

Settings (``method_args``): ``dim`` (d), ``hidden``. ``model.split`` must be
``none`` (the whole backbone is the encoder) and ``reduction`` empty. With no
adversary configured, one attribute adversary on ``private`` is added; decoder
adversaries are refused (MaxEnt-ARL has none).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import AdversaryConfig, Config
from ..data.base import TaskInfo
from ..errors import ConfigError
from ..models.backbones import build_backbone
from ..obfuscator import ClientPart
from .base import METHODS, Method, MethodArg, kl_to_uniform, per_dataset
from .resnet18 import WHOLE

DIM = {"digits": 128, "cifar10": 128, "celeba": 256, "fairface": 256, "utkface": 256}


class Embedding(ClientPart):
    """A whole backbone whose last layer emits a ``dim`` vector: ``(N, 3, H, W) -> (N, dim)``."""

    def __init__(self, backbone: str, dim: int, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.net = build_backbone(backbone, dim)
        self.image_shape = tuple(image_shape)
        self.z_shape = (dim,)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mlp(dim: int, hidden: int, num_classes: int) -> nn.Module:
    """``d -> hidden -> classes``, the predictor / adversary of MaxEnt-ARL."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))


@METHODS.register("maxent")
class MaxEntARL(Method):
    args = {
        "dim": MethodArg(int, per_dataset(DIM, "dim", "embedding size d"), "size d of the embedding the encoder emits"),
        "hidden": MethodArg(int, 0, "hidden width of the predictor and adversary MLPs; 0 = d"),
    }

    splits = (WHOLE,)
    splits_why = "its encoder is a whole backbone emitting a d-dimensional embedding"
    adversaries_role = "required"
    default_adversaries = (AdversaryConfig("adversary", "attribute", "private"),)
    adversary_kinds = ("attribute",)
    lam_hint = " (lam = alpha / (1 - alpha), e.g. 1)"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        if self.options["dim"] < 1 or self.options["hidden"] < 0:
            raise ConfigError(f"maxent needs method_args.dim >= 1 and hidden >= 0, got {self.options}")
        self.dim = self.options["dim"]
        self.hidden = self.options["hidden"] or self.dim

    def client(self, info: TaskInfo) -> tuple[ClientPart, None]:
        return Embedding(self.cfg.model.backbone, self.dim, info.image_shape), None

    def server_head(self, info: TaskInfo, num_classes: int) -> nn.Module:
        """The paper's task predictor (and adversary): an MLP on the d-dimensional embedding."""
        return mlp(self.dim, self.hidden, num_classes)

    def privacy_term(self, adv: AdversaryConfig, output: torch.Tensor, x: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """``log K - H(softmax(A(z)))``: minimising it maximises the adversary's entropy."""
        return kl_to_uniform(output)
