"""What every reduction op shares."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry


class ReductionOp(nn.Module):
    """A step of the information-reduction chain.

    Subclasses validate their arguments once in ``__init__`` and wrap a pure
    tensor function. ``random`` ops draw fresh randomness at every call, in
    training *and* at inference: they are part of the deployed obfuscator.
    Randomness comes from torch's global generator, so ``torch.manual_seed``
    makes a run reproducible.
    """

    name: ClassVar[str]
    random: ClassVar[bool] = False
    needs_spatial: ClassVar[bool] = False

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape (without batch) this op produces for ``in_shape``; raises
        :class:`ConfigError` if the op cannot take that shape."""
        if self.needs_spatial and len(in_shape) != 3:
            raise ConfigError(
                f"reduction op {self.name!r} needs a spatial representation (C, H, W), "
                f"but gets shape {tuple(in_shape)}; use an earlier split point or drop this op"
            )
        return tuple(in_shape)


OPS: Registry[ReductionOp] = Registry("reduction op")


def check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not (0.0 <= value <= 1.0):
        raise ConfigError(f"{name} must be a fraction in [0, 1], got {value}")
    return value


def check_nonnegative(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value}")
    return value


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def randn(shape: torch.Size | tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


def rand(shape: torch.Size | tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
