"""What runs on the client. The obfuscator of ``ours`` is the encoder followed by
the reduction chain; every method's client part follows :class:`ClientPart`, so
evaluation, export and the clients treat them alike."""

from __future__ import annotations

import math

import torch
from torch import nn

from .models.backbones import output_shape
from .reduction import Reduction


class ClientPart(nn.Module):
    """The part of a method deployed to the client: images ``(N, 3, H, W)`` in
    [0, 1] -> ``z`` ``(N, *z_shape)``.

    It is two stages: ``encode`` (deterministic, a function of the image alone)
    and ``reduce`` (the random part, identity for a deterministic client).
    Attackers cache ``encode``'s output and draw ``reduce`` afresh, as an attacker
    who owns the client can; averaging many queries converges to ``reduce_silenced``.

    Randomness: ``u=None`` draws fresh from torch's global generator; ``u`` is
    ``(N, draws)`` uniforms in (0, 1) (consistent randomness, and the input of
    the exported model).

    Attributes:
        image_shape: (C, H, W) of the input images.
        z_shape: shape of ``z`` without the batch axis.
    """

    image_shape: tuple[int, ...]
    z_shape: tuple[int, ...]

    @property
    def random_ops(self) -> tuple[str, ...]:
        """Names of the random steps (empty: the same image always gives the same ``z``)."""
        return ()

    @property
    def noise_ops(self) -> tuple[str, ...]:
        """Names of the random steps that add noise to ``z``: averaging repeated
        queries removes them (``reduce_silenced``); the other random steps stay."""
        return ()

    @property
    def draws(self) -> int:
        """Uniforms per image that one call consumes."""
        return 0

    @property
    def counted_network(self) -> nn.Module:
        """The network whose FLOPs the client's cost counts (elementwise random steps are not counted)."""
        return self

    def stages(self) -> list[tuple[str, nn.Module]]:
        """Its parts in order, by name, to say which one fails to export."""
        return [("client", self)]

    @property
    def encoded_shape(self) -> tuple[int, ...]:
        """Shape of ``encode``'s output without the batch axis."""
        return tuple(self.z_shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reduce(self, e: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        return e

    def reduce_silenced(self, e: torch.Tensor) -> torch.Tensor:
        """``reduce`` with every noise source removed (other random steps as deployed)."""
        return self.reduce(e)

    def queried(self, e: torch.Tensor, k: float) -> torch.Tensor:
        """What a server holds after ``k`` queries of each image: the mean of ``k``
        fresh draws of ``reduce(e)``; ``k = inf`` is the limit, ``reduce_silenced(e)``."""
        if math.isinf(k):
            return self.reduce_silenced(e)
        if k == 1 or not self.random_ops:
            return self.reduce(e)
        return sum(self.reduce(e) for _ in range(int(k))) / k

    def forward(self, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        return self.reduce(self.encode(x), u)

    def export_form(self) -> nn.Module:
        """A module ``(image[, draws]) -> z`` that ``torch.onnx.export`` can trace."""
        return self


class Obfuscator(ClientPart):
    """``z = reduction(encoder(x))``.

    Args:
        encoder: the backbone's front.
        reduction: the information-reduction chain (may be empty).
        image_shape: (C, H, W) of the input images; used to check the chain.
        allow_no_noise: accept a chain that breaks the noise rule
            (see :meth:`Reduction.check`).

    Example:
        >>> from privsplit.models import split_backbone
        >>> enc, _ = split_backbone("resnet18", "rn18_3", num_classes=2)
        >>> obf = Obfuscator(enc, Reduction.from_config([{"op": "noise", "sigma": 2}]), (3, 32, 32))
        >>> obf.z_shape, obf.draws  # 2 uniforms per noise value
        ((256, 2, 2), 2048)
    """

    def __init__(
        self,
        encoder: nn.Module,
        reduction: Reduction,
        image_shape: tuple[int, int, int],
        allow_no_noise: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.reduction = reduction
        self.image_shape = tuple(image_shape)
        self.encoder_shape = output_shape(encoder, self.image_shape)
        self.z_shape = reduction.check(self.encoder_shape, self.image_shape, allow_no_noise)

    @property
    def random_ops(self) -> tuple[str, ...]:
        return tuple(op.name for op in self.reduction if op.random)

    @property
    def noise_ops(self) -> tuple[str, ...]:
        return tuple(op.name for op in self.reduction if op.additive_noise)

    @property
    def counted_network(self) -> nn.Module:
        return self.encoder

    def stages(self) -> list[tuple[str, nn.Module]]:
        return [("encoder", self.encoder)] + [(op.name, op) for op in self.reduction]

    @property
    def draws(self) -> int:
        return self.reduction.draws(self.encoder_shape)

    @property
    def encoded_shape(self) -> tuple[int, ...]:
        return tuple(self.encoder_shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def reduce(self, e: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        return self.reduction(e, u)

    def reduce_silenced(self, e: torch.Tensor) -> torch.Tensor:
        return self.reduction.silenced()(e)  # parameter-free ops: cheap to build per call

    def export_form(self) -> nn.Module:
        return _Exported(self.encoder, self.reduction.export_form(self.encoder_shape))


class _Exported(nn.Module):
    def __init__(self, encoder: nn.Module, reduction: Reduction) -> None:
        super().__init__()
        self.encoder, self.reduction = encoder, reduction

    def forward(self, image: torch.Tensor, draws: torch.Tensor | None = None) -> torch.Tensor:
        return self.reduction(self.encoder(image), draws)

