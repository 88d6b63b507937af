"""``ours``: the information-restriction obfuscator.

The encoder is the backbone's front up to the split point; the reduction
chain (frequency filter, noise, random replacement, shuffling, resizing) then
limits what ``z`` can carry. Trained with the task loss, optionally against
proxy adversaries (obfuscator loss = task - lam * adversary).

Noise hides the features from a server that sees each image once; a server
that averages many near-identical queries approaches the noise-free features,
where only information that is gone counts. Three settings (``method_args``)
act on those features themselves:

* ``bottleneck: C``: a learned 1x1 projection to ``C`` channels (``C`` values
  for a flat ``z``) ends the encoder, before the chain: fewer values leave the
  device (fewer bytes sent, too), and the server's network starts with the
  projection back;
* ``dependence: W``: ``W`` x the squared distance correlation between the
  noise-free features and the private label within each utility class
  (:func:`~privsplit.metrics.dependence.conditional_dcor`): what the features
  say about the private label beyond what the task needs, with no network to
  fool;
* ``centre: W``: ``W`` x the share of the noise-free features' variance left
  within the utility classes (pulls each class together).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..data.base import TaskInfo
from ..errors import ConfigError
from ..metrics.dependence import conditional_dcor, within_class_share
from ..models.backbones import build_head, representation_shape, split_backbone
from ..obfuscator import ClientPart, Obfuscator
from ..reduction import Reduction
from .base import METHODS, Method, MethodArg

PRIVATE = "private"  # the label the dependence term removes


def projection(c_in: int, c_out: int, spatial: bool, activate: bool) -> nn.Module:
    """A learned 1x1 projection of ``c_in`` channels (values, for a flat input) to ``c_out``;
    with ``activate``, batch norm and ReLU after it, like a backbone stage's output."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 1) if spatial else nn.Linear(c_in, c_out)]
    if activate:
        layers += [nn.BatchNorm2d(c_out) if spatial else nn.BatchNorm1d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


@METHODS.register("ours")
class Ours(Method):
    uses_reduction = True
    adversaries_role = "optional"
    args = {
        "bottleneck": MethodArg(int, 0, "channels a learned 1x1 projection keeps at the end of the encoder, before the "
                                "reduction chain (values, for a flat z); 0 = none", ge=0),
        "dependence": MethodArg(float, 0.0, "weight of the squared distance correlation between the noise-free features "
                                "and the private label within each utility class, added to the obfuscator's loss", ge=0),
        "centre": MethodArg(float, 0.0, "weight of the share of the noise-free features' variance within the utility "
                            "classes, added to the obfuscator's loss", ge=0),
    }

    def _bottleneck(self, info: TaskInfo) -> tuple[int, int, bool] | None:
        """(encoder channels, kept channels, spatial) when a bottleneck is set."""
        b = self.options["bottleneck"]
        if not b:
            return None
        c, *size = info.image_shape
        shape = representation_shape(self.cfg.model.backbone, self.cfg.model.split, tuple(size), channels=c)
        if b > shape[0]:
            raise ConfigError(f"method_args.bottleneck={b} is wider than the encoder's output ({shape[0]} "
                              f"{'channels' if len(shape) == 3 else 'values'} at {self.cfg.model.split}); "
                              f"set it below {shape[0]}, or 0 for none")
        return shape[0], b, len(shape) == 3

    def client(self, info: TaskInfo) -> tuple[ClientPart, nn.Module]:
        cfg = self.cfg
        encoder, head = split_backbone(cfg.model.backbone, cfg.model.split, info.num_classes(cfg.heads[0].target))
        if (bn := self._bottleneck(info)) is not None:
            c, b, spatial = bn
            encoder = nn.Sequential(encoder, projection(c, b, spatial, activate=False))
            head = nn.Sequential(projection(b, c, spatial, activate=True), head)
        return Obfuscator(encoder, Reduction.from_config(cfg.reduction), info.image_shape, cfg.model.allow_no_noise), head

    def server_head(self, info: TaskInfo, num_classes: int) -> nn.Module:
        m = self.cfg.model
        head = build_head(m.backbone, m.split, num_classes)
        if (bn := self._bottleneck(info)) is not None:
            c, b, spatial = bn
            head = nn.Sequential(projection(b, c, spatial, activate=True), head)
        return head

    def feature_terms(self, client: ClientPart, e: torch.Tensor, labels: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        dep, centre = self.options["dependence"], self.options["centre"]
        if not (dep or centre):
            return {}
        clean = client.queried(e, math.inf)  # what a server averaging many queries converges to
        utility = labels[self.cfg.heads[0].target]
        terms = {}
        if dep:
            if PRIVATE not in labels:
                raise ConfigError(f"method_args.dependence needs a {PRIVATE!r} label; this data set has {', '.join(labels)}")
            private = labels[PRIVATE]
            k = int(private.max()) + 1
            terms["dependence"] = dep * conditional_dcor(clean, private, utility, k)
        if centre:
            terms["centre"] = centre * within_class_share(clean, utility)
        return terms
