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
from ..obfuscator import ClientPart
from ..registry import Registry
from ..adversaries import ADVERSARIES

if TYPE_CHECKING:
    from ..reduction import Reduction


@dataclass(frozen=True)
class MethodArg:
    """One entry of ``Config.method_args`` that a method accepts.

    Attributes:
        type: float, int, bool or str; ints are accepted for floats.
        default: the value, or a function of the dataset name giving it
            (it raises :class:`ConfigError` for a dataset it has no default for).
        help: what it means, shown in errors.
        ge: the smallest value accepted (None: any).
    """

    type: type
    default: Any | Callable[[str], Any]
    help: str
    ge: float | None = None


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

    A method says what it needs in class attributes, checked once by
    :meth:`check`, and builds its client part in :meth:`client`; :meth:`build`
    assembles every method's :class:`SplitModel` the same way. The server's
    network per head is :meth:`server_head`; the attribute attacker's is
    :meth:`attacker_head` (by default the same network). Methods may override
    the losses.
    """

    name: ClassVar[str]
    # The ``method_args`` keys this method accepts.
    args: ClassVar[dict[str, MethodArg]] = {}
    # Split points it can use (None: any of the backbone's), and why.
    splits: ClassVar[tuple[str, ...] | None] = None
    splits_why: ClassVar[str] = ""
    # Whether it applies the configured reduction chain (only ``ours``).
    uses_reduction: ClassVar[bool] = False
    # What proxy adversaries are to it: "optional" (trained against when
    # train.lam > 0), "required" (train.lam > 0 and default_adversaries when
    # none are configured) or "monitor" (task loss only: train.lam must be 0).
    adversaries_role: ClassVar[str] = "monitor"
    default_adversaries: ClassVar[tuple[AdversaryConfig, ...]] = ()
    adversary_kinds: ClassVar[tuple[str, ...] | None] = None  # kinds it accepts (None: all)
    required_kinds: ClassVar[tuple[str, ...]] = ()  # kinds that must all be present
    lam_hint: ClassVar[str] = ""

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
                if arg.ge is not None and value < arg.ge:
                    raise ConfigError(f"method_args.{key} of method {cls.name!r} must be >= {arg.ge:g}, got {value!r} "
                                      f"({key}: {arg.help})")
            else:
                value = arg.default(cfg.data.name) if callable(arg.default) else arg.default
            out[key] = value
        return out

    # What a method builds -------------------------------------------------

    def client(self, info: TaskInfo) -> tuple[ClientPart, nn.Module | None]:
        """The client part, and the first head's network when it is cut from the
        same backbone as the client (so both start as the uncut network would;
        None: the first head is a fresh :meth:`server_head`)."""
        raise NotImplementedError

    def server_head(self, info: TaskInfo, num_classes: int) -> nn.Module:
        """The network the server runs on ``z`` for one head. Default: a fresh
        copy of the backbone's rest after the split point."""
        m = self.cfg.model
        return build_head(m.backbone, m.split, num_classes)

    def attacker_head(self, info: TaskInfo, num_classes: int) -> nn.Module:
        """A fresh attribute attacker on ``z`` (the privacy figure's attacker and
        the attribute proxy adversary). Default: the server's network."""
        return self.server_head(info, num_classes)

    def build(self, info: TaskInfo) -> SplitModel:
        """Check the config against what the method needs, then assemble its
        client, one server head per configured head, and its proxy adversaries."""
        cfg = self.cfg
        advs = self.check()
        client, first = self.client(info)
        heads = {h.name: first if i == 0 and first is not None else self.server_head(info, info.num_classes(h.target))
                 for i, h in enumerate(cfg.heads)}
        adversaries = {a.name: ADVERSARIES.create(a.kind).build(self, info, client.z_shape, a) for a in advs}
        return SplitModel(client, heads, {h.name: h.target for h in cfg.heads}, adversaries, {a.name: a for a in advs})

    def check(self) -> list[AdversaryConfig]:
        """Refuse settings this method would ignore or cannot use; returns the
        proxy adversaries it trains with (the configured ones, or its defaults)."""
        cfg = self.cfg
        if self.splits is not None and cfg.model.split not in self.splits:
            raise ConfigError(
                f"method {self.name!r} cannot use split point {cfg.model.split!r}: {self.splits_why}; "
                f"set model.split to one of: {', '.join(self.splits)}"
            )
        if cfg.reduction and not self.uses_reduction:
            ops = ", ".join(str(op.get("op")) for op in cfg.reduction)
            raise ConfigError(
                f"method {self.name!r} has no reduction chain, but the config lists {len(cfg.reduction)} op(s) "
                f"({ops}); set reduction=[] (the chain belongs to method 'ours')"
            )
        if self.adversaries_role == "monitor" and cfg.adversaries and cfg.train.lam > 0:
            raise ConfigError(
                f"method {self.name!r} is trained with the task loss only, but adversaries are configured with "
                f"train.lam={cfg.train.lam}; set train.lam=0 to keep them as monitors, or remove them"
            )
        if self.adversaries_role == "required" and cfg.train.lam <= 0:
            raise ConfigError(f"{self.name} trains its client against the adversaries; set train.lam > 0{self.lam_hint}")
        advs = list(cfg.adversaries) or list(self.default_adversaries)
        if self.adversary_kinds is not None:
            bad = [a.name for a in advs if a.kind not in self.adversary_kinds]
            if bad:
                raise ConfigError(
                    f"{self.name}'s adversaries are of kind {', '.join(self.adversary_kinds)}; adversaries "
                    f"{', '.join(bad)} are not kind {' or '.join(self.adversary_kinds)}: remove them "
                    "(reconstruction attacks are measured after training)"
                )
        kinds = {a.kind for a in advs}
        if not set(self.required_kinds) <= kinds:
            raise ConfigError(
                f"{self.name} trains against adversaries of kinds {', '.join(self.required_kinds)}; the configured "
                f"adversaries have kind(s) {', '.join(sorted(kinds))}: add the missing one, or leave adversaries "
                "empty for the defaults"
            )
        unique_names("head", [h.name for h in cfg.heads])
        unique_names("adversary", [a.name for a in advs])
        return advs

    # Losses ------------------------------------------------------------------

    def task_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target)

    def adversary_loss(self, adv: AdversaryConfig, output: torch.Tensor, x: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the adversary minimises: its kind's loss (cross-entropy on its
        target for an attribute adversary, reconstruction MSE for a decoder)."""
        return ADVERSARIES.create(adv.kind).loss(output, x, labels, adv)

    def feature_terms(self, client: ClientPart, e: torch.Tensor, labels: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Terms added to the obfuscator's loss that need no adversary, by name
        (logged as ``train/<name>``), computed from the encoder's output ``e`` of
        the batch; already weighted. Default: none."""
        return {}

    def privacy_term(self, adv: AdversaryConfig, output: torch.Tensor, x: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """Added to the obfuscator's loss, scaled by ``train.lam``: ``-adversary_loss``
        (the obfuscator wants the adversary to fail), or with ``objective: entropy``
        ``log K - H(softmax(output))`` (it wants the adversary uncertain)."""
        if adv.objective == "entropy":
            return kl_to_uniform(output)
        return -self.adversary_loss(adv, output, x, labels)


def split_client(method: Method, info: TaskInfo, reduction: "Reduction", allow_no_noise: bool) -> tuple[ClientPart, nn.Module]:
    """The client of a method that cuts the backbone at ``model.split``: the
    encoder and ``reduction``; returned with the first head, cut from the same
    network."""
    from ..models.backbones import split_backbone
    from ..obfuscator import Obfuscator

    cfg = method.cfg
    encoder, head = split_backbone(cfg.model.backbone, cfg.model.split, info.num_classes(cfg.heads[0].target))
    return Obfuscator(encoder, reduction, info.image_shape, allow_no_noise), head


def unique_names(kind: str, names: list[str]) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{kind} names must be unique; repeated: {', '.join(dup)}")


METHODS: Registry[type[Method]] = Registry("method")
