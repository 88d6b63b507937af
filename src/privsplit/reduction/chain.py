"""The information-reduction chain: ops built from config, in any order."""

from __future__ import annotations

import inspect
import math
import typing
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ..checks import check_type
from ..errors import ConfigError
from .base import OPS, ReductionOp


def build_op(spec: Mapping[str, Any]) -> ReductionOp:
    """Build one op from ``{"op": name, **arguments}``."""
    if not isinstance(spec, Mapping) or "op" not in spec:
        raise ConfigError(
            f"each reduction step must be a mapping with an 'op' key (one of {', '.join(OPS.names())}), got {spec!r}"
        )
    kwargs = {k: v for k, v in spec.items() if k != "op"}
    if not isinstance(spec["op"], str):
        raise ConfigError(f"reduction op must be one of {', '.join(OPS.names())}, got {spec['op']!r}")
    cls = OPS.get(spec["op"])
    params = inspect.signature(cls.__init__).parameters
    valid = [p for p in params if p != "self"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ConfigError(f"reduction op {spec['op']!r} takes {', '.join(valid)}; unknown: {', '.join(unknown)}")
    missing = [p for p in valid if params[p].default is inspect.Parameter.empty and p not in kwargs]
    if missing:
        raise ConfigError(f"reduction op {spec['op']!r} needs {', '.join(missing)}")
    hints = typing.get_type_hints(cls.__init__)
    return cls(**{k: check_type(hints[k], v, f"{spec['op']}.{k}") for k, v in kwargs.items()})


class Reduction(nn.Sequential):
    """An ordered chain of reduction ops.

    Example:
        >>> chain = Reduction.from_config([{"op": "noise", "sigma": 2.0}, {"op": "shuffle"}])
        >>> chain.output_shape((256, 12, 12))
        (256, 12, 12)
    """

    @classmethod
    def from_config(cls, specs: Iterable[Mapping[str, Any]]) -> "Reduction":
        return cls(*[build_op(s) for s in specs])

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(in_shape)
        for op in self:
            shape = op.output_shape(shape)
        return shape

    @property
    def has_noise(self) -> bool:
        return any(op.adds_noise for op in self)

    @property
    def random(self) -> bool:
        return any(op.random for op in self)

    def draws(self, in_shape: tuple[int, ...]) -> int:
        """Uniforms per sample the whole chain consumes for an input of ``in_shape``."""
        total, shape = 0, tuple(in_shape)
        for op in self:
            total += op.draws(shape)
            shape = op.output_shape(shape)
        return total

    def silenced(self) -> "Reduction":
        """The chain with every noise op silenced and the other ops as deployed:
        the limit of averaging infinitely many queries of one image."""
        return Reduction(*[op.silenced() for op in self])

    def export_form(self, in_shape: tuple[int, ...]) -> "Reduction":
        """The chain with each op in its exportable form (see :meth:`ReductionOp.export_form`)."""
        ops, shape = [], tuple(in_shape)
        for op in self:
            ops.append(op.export_form(shape))
            shape = op.output_shape(shape)
        return Reduction(*ops)

    def check(self, z_shape: tuple[int, ...], image_shape: tuple[int, ...], allow_no_noise: bool = False) -> tuple[int, ...]:
        """Validate the chain for an encoder output ``z_shape`` and return the
        shape of what leaves the client.

        The method's rule: when the representation that leaves the chain has
        more elements than the input image, noise must be part of the chain
        (otherwise the server receives more numbers than the raw image holds).
        """
        out = self.output_shape(z_shape)
        if math.prod(out) > math.prod(image_shape) and not self.has_noise and not allow_no_noise:
            raise ConfigError(
                f"the representation leaving the client has {math.prod(out)} elements {out}, more than the "
                f"{math.prod(image_shape)} of the input image {tuple(image_shape)}, and the reduction chain has no "
                "'noise' op. Add one (e.g. {op: noise, sigma: 2}), shrink it with 'resize', use a later split "
                "point, or set model.allow_no_noise=true to override"
            )
        return out

    def forward(self, z: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """``z`` through every op; ``u`` (N, draws) gives the ops their uniforms
        in chain order instead of fresh draws."""
        start = 0
        for op in self:
            if u is None:
                z = op(z)
                continue
            n = op.draws(tuple(int(s) for s in z.shape[1:])) if isinstance(op, ReductionOp) else 0
            z = op(z, u[:, start : start + n] if n else None)
            start += n
        return z
