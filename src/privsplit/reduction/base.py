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
    tensor function. ``random`` ops draw randomness at every call, in training
    *and* at inference: they are part of the deployed obfuscator. They take it
    from one of two sources:

    * ``u=None``: fresh draws from torch's global generator (``torch.manual_seed``
      makes a run reproducible); used in training;
    * ``u``: a float tensor ``(N, draws(in_shape))`` of uniforms in (0, 1), one
      row per sample. This is how the randomness is made consistent (drawn from a
      keyed hash of the image, :mod:`privsplit_edge.keyed`) and how the exported
      model receives it: the same module trains and exports.

    An op whose tensor form does not export (the FFT of the frequency filter)
    gives an equivalent module through :meth:`export_form`.
    """

    name: ClassVar[str]
    random: ClassVar[bool] = False
    needs_spatial: ClassVar[bool] = False
    # Its randomness is noise added to z: averaging repeated queries removes it, and
    # ``silenced`` drops it (the noise-free limit). Other random ops stay as deployed.
    additive_noise: ClassVar[bool] = False

    @property
    def adds_noise(self) -> bool:
        """Whether this op, as configured, adds noise (the chain's noise rule counts it)."""
        return self.additive_noise

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape (without batch) this op produces for ``in_shape``; raises
        :class:`ConfigError` if the op cannot take that shape."""
        if self.needs_spatial and len(in_shape) != 3:
            raise ConfigError(
                f"reduction op {self.name!r} needs a spatial representation (C, H, W), "
                f"but gets shape {tuple(in_shape)}; use an earlier split point or drop this op"
            )
        return tuple(in_shape)

    def draws(self, in_shape: tuple[int, ...]) -> int:
        """Uniforms per sample that one call consumes for an input of ``in_shape`` (0: deterministic)."""
        return 0

    def forward(self, z: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def silenced(self) -> "ReductionOp":
        """This op with its additive noise removed: what averaging infinitely
        many queries of one image converges to. Other random ops stay as deployed."""
        return self

    def export_form(self, in_shape: tuple[int, ...]) -> nn.Module:
        """A module with the same math that ``torch.onnx.export`` can trace, for
        inputs of ``in_shape``; the op itself unless it overrides this."""
        return self


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


def normal_like(x: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
    """Standard normals shaped like ``x``: fresh (``randn_like``), or from the
    uniforms ``u`` (N, 2 * numel per sample) by the Box-Muller transform."""
    if u is None:
        return torch.randn_like(x)
    d = u.shape[1] // 2
    radius = torch.sqrt(-2.0 * torch.log(u[:, :d]))  # u is in (0, 1): log is finite
    return (radius * torch.cos(2 * math.pi * u[:, d:])).reshape(x.shape).to(x.dtype)


def uniform_like(x: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
    """Uniforms in [0, 1) shaped like ``x``: fresh, or ``u`` (N, numel per sample) reshaped."""
    return torch.rand_like(x) if u is None else u.reshape(x.shape).to(x.dtype)
