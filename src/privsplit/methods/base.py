"""The interface every method implements, and the model all of them build.

A method says how to build its parts and what its losses are; the one
training engine (:mod:`privsplit.train.engine`) runs every method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import AdversaryConfig, Config
from ..checks import check_type
from ..data.base import TaskInfo
from ..errors import ConfigError
from ..models.backbones import build_head
from ..models.decoder import Decoder
from ..registry import Registry

if TYPE_CHECKING:
    from ..reduction import Reduction

# Datasets of faces, for per-dataset defaults of the baselines.
FACE_DATASETS = ("celeba", "fairface", "utkface")


@dataclass(frozen=True)
class MethodArg:
    """One entry of ``Config.method_args`` that a method accepts.

    Attributes:
        type: float, int, bool or str; ints are accepted for floats.
        default: the value, or a function of the dataset name giving it
            (it raises :class:`ConfigError` for a dataset it has no default for).
        help: what it means, shown in errors.
    """

    type: type
    default: Any | Callable[[str], Any]
    help: str


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of ``softmax(logits)`` over the batch; logits ``(N, K)``."""
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(1).mean()


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """``log K - H(softmax(logits))``: 0 exactly when the prediction is uniform."""
    return math.log(logits.shape[1]) - entropy(logits)


def per_dataset(values: dict[str, Any], arg: str, what: str) -> Callable[[str], Any]:
    """A default that depends on the dataset; unknown datasets must set ``arg``."""

    def default(dataset: str) -> Any:
        if dataset in values:
            return values[dataset]
        raise ConfigError(
            f"there is no default {what} for dataset {dataset!r} (defaults exist for "
            f"{', '.join(sorted(values))}); set it with --set method_args.{arg}=VALUE"
        )

    return default


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
    # The ``method_args`` keys this method accepts.
    args: ClassVar[dict[str, MethodArg]] = {}

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.options = self.resolve_args(cfg)

    @classmethod
    def resolve_args(cls, cfg: Config) -> dict[str, Any]:
        """``cfg.method_args`` checked against :attr:`args`, defaults filled in."""
        given = dict(cfg.method_args or {})
        unknown = sorted(set(given) - set(cls.args))
        if unknown:
            valid = ", ".join(f"{k} ({a.help})" for k, a in sorted(cls.args.items())) or "none"
            raise ConfigError(f"method {cls.name!r} has no setting(s) {', '.join(unknown)} in method_args; valid: {valid}")
        out: dict[str, Any] = {}
        for key, arg in cls.args.items():
            if key in given:
                try:
                    value = check_type(arg.type, given[key], f"method_args.{key} of method {cls.name!r}")
                except ConfigError as e:
                    raise ConfigError(f"{e} ({key}: {arg.help})") from None
            else:
                value = arg.default(cfg.data.name) if callable(arg.default) else arg.default
            out[key] = value
        return out

    def build(self, info: TaskInfo) -> SplitModel:
        raise NotImplementedError

    def attacker_head(self, info: TaskInfo, num_classes: int) -> nn.Module:
        """A fresh attribute attacker on ``z`` (the privacy figure's attacker).

        Default: a fresh copy of the backbone's rest after the split point, the
        same network the server runs. Methods whose ``z`` is not a cut of the
        backbone override it.
        """
        m = self.cfg.model
        return build_head(m.backbone, m.split, num_classes)

    def task_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target)

    def adversary_loss(self, adv: AdversaryConfig, output: torch.Tensor, x: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the adversary minimises: cross-entropy on its target, or the
        reconstruction MSE for a decoder."""
        if adv.kind == "decoder":
            return F.mse_loss(output, x)
        return F.cross_entropy(output, labels[adv.target])

    def privacy_term(self, adv: AdversaryConfig, output: torch.Tensor, x: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """Added to the obfuscator's loss, scaled by ``train.lam``: ``-adversary_loss``
        (the obfuscator wants the adversary to fail), or with ``objective: entropy``
        ``log K - H(softmax(output))`` (it wants the adversary uncertain)."""
        if adv.objective == "entropy":
            return kl_to_uniform(output)
        return -self.adversary_loss(adv, output, x, labels)

    # Helpers shared by methods.

    def build_adversaries(
        self, info: TaskInfo, z_shape: tuple[int, ...], adversaries: list[AdversaryConfig] | None = None
    ) -> dict[str, nn.Module]:
        """Proxy adversaries: attribute ones are :meth:`attacker_head`, decoders a :class:`Decoder`."""
        out: dict[str, nn.Module] = {}
        for adv in self.cfg.adversaries if adversaries is None else adversaries:
            if adv.kind == "attribute":
                out[adv.name] = self.attacker_head(info, info.num_classes(adv.target))
            else:
                out[adv.name] = Decoder(z_shape, info.image_shape)
        return out

    # Checks shared by the baselines: a method refuses settings it would ignore.

    def require_split(self, allowed: list[str] | tuple[str, ...], why: str) -> None:
        """Fail unless ``model.split`` is one of ``allowed``."""
        split = self.cfg.model.split
        if split not in allowed:
            raise ConfigError(
                f"method {self.name!r} cannot use split point {split!r}: {why}; "
                f"set model.split to one of: {', '.join(allowed)}"
            )

    def require_no_reduction(self) -> None:
        """Fail if a reduction chain is configured that this method would not apply."""
        if self.cfg.reduction:
            ops = ", ".join(str(op.get("op")) for op in self.cfg.reduction)
            raise ConfigError(
                f"method {self.name!r} has no reduction chain, but the config lists {len(self.cfg.reduction)} op(s) "
                f"({ops}); set reduction=[] (the chain belongs to method 'ours')"
            )

    def require_task_only(self) -> None:
        """Fail if proxy adversaries would train the obfuscator (``train.lam > 0``)
        in a method trained with the task loss only; with ``lam = 0`` they only watch."""
        if self.cfg.adversaries and self.cfg.train.lam > 0:
            raise ConfigError(
                f"method {self.name!r} is trained with the task loss only, but adversaries are configured with "
                f"train.lam={self.cfg.train.lam}; set train.lam=0 to keep them as monitors, or remove them"
            )

    def build_split(
        self,
        info: TaskInfo,
        reduction: "Reduction",
        allow_no_noise: bool,
        adversaries: list[AdversaryConfig] | None = None,
    ) -> SplitModel:
        """The model of a method that cuts the backbone at ``model.split``:
        encoder + ``reduction`` on the client, the backbone's rest per head.
        The encoder and the first head are cut from one network, so they start
        as the uncut network would; further heads are fresh copies of the rest.
        ``adversaries`` defaults to the configured ones."""
        from ..models.backbones import split_backbone
        from ..obfuscator import Obfuscator

        cfg = self.cfg
        advs = cfg.adversaries if adversaries is None else adversaries
        unique_names("head", [h.name for h in cfg.heads])
        unique_names("adversary", [a.name for a in advs])
        first, *rest = cfg.heads
        encoder, head = split_backbone(cfg.model.backbone, cfg.model.split, info.num_classes(first.target))
        heads = {first.name: head, **{h.name: self.attacker_head(info, info.num_classes(h.target)) for h in rest}}
        obfuscator = Obfuscator(encoder, reduction, info.image_shape, allow_no_noise)
        return SplitModel(
            obfuscator,
            heads,
            {h.name: h.target for h in cfg.heads},
            self.build_adversaries(info, obfuscator.z_shape, advs),
            {a.name: a for a in advs},
        )

    def task_heads(self, info: TaskInfo, make: Callable[[int], nn.Module]) -> dict[str, nn.Module]:
        """One head per configured head, ``make(num_classes)`` each."""
        unique_names("head", [h.name for h in self.cfg.heads])
        unique_names("adversary", [a.name for a in self.cfg.adversaries])
        return {h.name: make(info.num_classes(h.target)) for h in self.cfg.heads}


def unique_names(kind: str, names: list[str]) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{kind} names must be unique; repeated: {', '.join(dup)}")


METHODS: Registry[type[Method]] = Registry("method")
