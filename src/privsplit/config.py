"""Typed configuration: dataclasses, YAML in and out, dotted overrides.

Each component owns its section (``DataConfig`` lives in :mod:`privsplit.data`,
``TrainConfig`` in :mod:`privsplit.train`); :class:`Config` puts them together.
The resolved config is saved beside every checkpoint so any result can be re-run.

Example:
    >>> cfg = apply_overrides(Config(), ["train.epochs=3", "reduction.0.sigma=8"])
    >>> cfg.train.epochs, cfg.reduction[0]["sigma"]
    (3, 8)
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from .checks import check_fields, check_type, setting
from .data.base import DataConfig
from .errors import ConfigError
from .train.config import TrainConfig


@dataclass
class ModelConfig:
    """Where to cut which backbone.

    Attributes:
        backbone: resnet18, resnet34, resnet50, mobilenet_v2, alexnet or unet.
        split: split point, e.g. rn18_3 (see ``privsplit.models.split_points``).
        allow_no_noise: accept a chain whose output has more elements than the
            image without a noise op (the method's rule forbids it by default).
    """

    backbone: str = "resnet18"
    split: str = "rn18_3"
    allow_no_noise: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "model")


@dataclass
class HeadConfig:
    """A task head on the server: a fresh copy of the backbone's rest predicting ``target``.
    ``name`` is what clients ask for (``?head=NAME``): letters, digits, ``_`` and ``-``."""

    name: str = setting("task", name=True)
    target: str = "utility"

    def __post_init__(self) -> None:
        check_fields(self, "heads")


ADVERSARY_OBJECTIVES = ("ce", "entropy")
ADVERSARY_FAMILIES = ("head", "linear", "mlp", "mlp_flat")  # privsplit.models.probes.PROBES, and head


@dataclass
class AdversaryConfig:
    """A proxy adversary trained on ``z`` during training.

    Attributes:
        name: unique name, used in logs and checkpoints.
        kind: "attribute" (classifier of ``target``; a fresh copy of the
            backbone's rest) or "decoder" (reconstructs the image).
        target: label an attribute adversary predicts.
        queries: what the adversary sees: ``z`` (1), the mean of K draws of the
            client's randomness for each image (K, what a server that received
            the image K times holds), or ``inf``, the noise-free features
            (every noise op silenced). K > 1 and inf train the obfuscator to
            remove the private attribute from the encoder's output itself,
            not only to hide it under fresh noise.
        objective: what the obfuscator does to an attribute adversary: ``ce``
            maximises its cross-entropy (the paper), ``entropy`` makes its
            prediction maximally uncertain (MaxEnt-ARL's term, which cannot be
            gamed by being confidently wrong).
        family: the network of an attribute adversary: ``head`` (the
            backbone's rest, the paper's), ``linear`` (a linear probe on
            standardised, unpooled ``z``), ``mlp`` (pooled ``z``) or ``mlp_flat``
            (unpooled ``z``); see :mod:`privsplit.models.probes`. An obfuscator
            trained against one family can leave the label readable by another:
            configure several.
        reset_every: re-initialise the adversary every N epochs (0 = never): a
            fresh proxy has not been fooled yet.
    """

    name: str = setting("adversary", name=True)
    kind: str = "attribute"  # a name in privsplit.adversaries.ADVERSARIES
    target: str = "private"
    queries: Any = 1  # checked by adversary_queries
    objective: str = setting("ce", choices=ADVERSARY_OBJECTIVES)
    family: str = setting("head", choices=ADVERSARY_FAMILIES)
    reset_every: int = setting(0, ge=0, le=100_000)

    def __post_init__(self) -> None:
        from .adversaries import ADVERSARIES  # deferred: it imports torch

        check_fields(self, "adversaries")
        if self.kind not in ADVERSARIES:
            raise ConfigError(f"unknown adversary kind {self.kind!r}; valid choices: {', '.join(ADVERSARIES.names())}")
        if self.objective == "entropy" and not ADVERSARIES.create(self.kind).classifies:
            raise ConfigError(f"adversaries.{self.name}.objective is entropy, but kind is {self.kind!r} (entropy only for kind attribute)")
        if self.family != "head" and not ADVERSARIES.create(self.kind).classifies:
            raise ConfigError(f"adversaries.{self.name}.family is {self.family!r}, but kind is {self.kind!r} "
                              "(families are for kind attribute; a decoder has one shape)")
        adversary_queries(self)


# The most repeated queries of one image anything averages over: an adversary's
# ``queries`` and ``privsplit evaluate --queries`` share it (each query is a pass).
MAX_QUERIES = 100_000


def adversary_queries(adv: AdversaryConfig) -> float:
    """An adversary's ``queries`` as a number: a whole number >= 1, or ``math.inf``."""
    q = adv.queries
    if (isinstance(q, str) and q.strip().lower() in ("inf", ".inf", "infinity")) or q == math.inf:
        return math.inf
    if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= MAX_QUERIES:
        raise ConfigError(f"adversaries.{adv.name}.queries must be a whole number >= 1 or inf "
                          f"(at most {MAX_QUERIES}), got {q!r}")
    return q


def _default_reduction() -> list[dict[str, Any]]:
    return [{"op": "noise", "sigma": 4.0, "normalize": "rms"}]


@dataclass
class Config:
    """A whole experiment.

    ``method_args`` holds the settings of the chosen method that have no place
    elsewhere (e.g. ``image_noise``'s ``sigma``, ``disco``'s ``ratio``); each
    method documents and checks its own keys (see ``privsplit.methods``), and
    unset keys take the method's default for the dataset.
    """

    method: str = "ours"
    name: str | None = setting(None, name=True)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    reduction: list[dict[str, Any]] = field(default_factory=_default_reduction)
    heads: list[HeadConfig] = field(default_factory=lambda: [HeadConfig()])
    adversaries: list[AdversaryConfig] = field(default_factory=list)
    train: TrainConfig = field(default_factory=TrainConfig)
    method_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_fields(self, "")
        if not self.heads:
            raise ConfigError("the config needs at least one head (heads: [{name: task, target: utility}])")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        return _build(cls, data, "")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())


def shipped_configs() -> Path:
    """The folder of the configs that ship with privsplit (the paper's settings)."""
    from importlib.resources import files

    return Path(str(files("privsplit") / "configs"))


def config_path(name: str | Path) -> Path:
    """``name`` as a file, or the shipped config of that name (``cifar10_rn18_3``)."""
    p = Path(name)
    if p.is_file():
        return p
    shipped = shipped_configs() / f"{p.name.removesuffix('.yaml')}.yaml"
    if p.parent == Path(".") and shipped.is_file():
        return shipped
    names = ", ".join(sorted(q.stem for q in shipped_configs().glob("*.yaml")))
    raise ConfigError(f"config file {p} does not exist, and no shipped config has that name (shipped: {names})")


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML config (a file, or the name of a shipped one), or start from
    the defaults, and apply ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = config_path(path)
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p} is not UTF-8 text (byte {e.start}): a config is a YAML file") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p} is not valid YAML: {' '.join(str(e).split())}") from None
        except OSError as e:
            raise ConfigError(f"cannot read the config file {p}: {e.strerror}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p} must hold a mapping at the top level, got {type(data).__name__}")
    return apply_overrides(Config.from_dict(data), overrides)


def apply_overrides(cfg: Config, overrides: Iterable[str]) -> Config:
    """Return ``cfg`` with dotted ``key=value`` overrides applied; values are
    parsed as YAML (``train.epochs=3``, ``reduction=[{op: noise, sigma: 2}]``,
    ``reduction.0.sigma=8``)."""
    data = cfg.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. train.epochs=5")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"value of override {item!r} is not valid YAML: {e}") from None
        _set_path(data, key.split("."), value, key)
    return Config.from_dict(data)


def _set_path(node: Any, parts: list[str], value: Any, full: str) -> None:
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"in {full!r}: {part!r} is not an index of a list of {len(node)} item(s)")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if part not in node or node[part] is None:
                    raise ConfigError(f"in {full!r}: unknown key {part!r}; valid keys: {', '.join(node)}")
                node = node[part]
        else:
            raise ConfigError(f"in {full!r}: {'.'.join(parts[:i])!r} is a value, not a section")


def _build(tp: Any, value: Any, where: str) -> Any:
    """Build dataclasses recursively from plain data; leaves are checked by
    :func:`~privsplit.checks.check_type`, ranges by each dataclass itself."""
    name = where or "config"
    if dataclasses.is_dataclass(tp):
        if value is None:
            return tp()
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        hints = typing.get_type_hints(tp)
        fields = {f.name for f in dataclasses.fields(tp) if f.init}
        unknown = sorted(set(map(str, value)) - fields)
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {name}; valid keys: {', '.join(sorted(fields))}")
        return tp(**{k: _build(hints[k], v, f"{where}.{k}" if where else k) for k, v in value.items()})
    if typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
        if not isinstance(value, list):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        return [_build(typing.get_args(tp)[0], v, f"{where}.{i}") for i, v in enumerate(value)]
    return check_type(tp, value, name)
