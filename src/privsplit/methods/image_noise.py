"""``image_noise``: Gaussian noise added to the input image; nothing is trained on the client.

``z = clamp(x + N(0, sigma^2), 0, 1)`` with ``x`` in [0, 1]; the obfuscator
has no parameters, and the noise is drawn afresh for every image, in training
and when deployed (evaluation included). The server runs a whole backbone
(ResNet18 by default) on ``z``; so does the attacker of its privacy figure.

Settings (``method_args``):
    sigma: noise standard deviation in image units; default 0.8 for cifar10
        and digits, 2 for the face sets (celeba, fairface, utkface; the
        benchmark issue gives 2 for CelebA and FairFace, and UTKFace, also
        faces, follows them). Other datasets must set it.

``model.split`` must be ``none`` and ``reduction`` empty, as for ``resnet18``.
"""

from __future__ import annotations

import math

import torch


from ..data.base import TaskInfo
from ..errors import ConfigError
from ..obfuscator import ClientPart
from ..reduction.base import normal_like
from .base import METHODS, MethodArg, per_dataset
from .resnet18 import WholeNetworkMethod

SIGMA = {"digits": 0.8, "cifar10": 0.8, "celeba": 2.0, "fairface": 2.0, "utkface": 2.0}


def noisy_image(x: torch.Tensor, sigma: float, u: torch.Tensor | None = None) -> torch.Tensor:
    """``clamp(x + sigma * N(0, 1), 0, 1)``, same shape as ``x``; normals fresh or
    from the uniforms ``u`` (N, 2 * numel per image)."""
    return (x + sigma * normal_like(x, u)).clamp(0.0, 1.0)


class NoisyImage(ClientPart):
    """The parameter-free obfuscator of ``image_noise``; active in training and evaluation alike."""

    def __init__(self, image_shape: tuple[int, int, int], sigma: float) -> None:
        super().__init__()
        if not sigma > 0:
            raise ConfigError(f"method_args.sigma of image_noise must be > 0, got {sigma}")
        self.image_shape = tuple(image_shape)
        self.z_shape = self.image_shape
        self.sigma = float(sigma)

    @property
    def random_ops(self) -> tuple[str, ...]:
        return ("noise",)

    @property
    def noise_ops(self) -> tuple[str, ...]:
        return ("noise",)

    @property
    def draws(self) -> int:
        return 2 * math.prod(self.image_shape)

    @property
    def encoded_shape(self) -> tuple[int, ...]:
        return self.image_shape

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def reduce(self, e: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        return noisy_image(e, self.sigma, u)

    def reduce_silenced(self, e: torch.Tensor) -> torch.Tensor:
        return e

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


@METHODS.register("image_noise")
class ImageNoise(WholeNetworkMethod):
    args = {"sigma": MethodArg(float, per_dataset(SIGMA, "sigma", "image-noise sigma"), "std of the noise added to the [0, 1] image")}

    def client(self, info: TaskInfo) -> tuple[ClientPart, None]:
        return NoisyImage(info.image_shape, self.options["sigma"]), None
