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

import torch
from torch import nn

from ..data.base import TaskInfo
from ..errors import ConfigError
from .base import METHODS, MethodArg, per_dataset
from .resnet18 import WholeNetworkMethod

SIGMA = {"digits": 0.8, "cifar10": 0.8, "celeba": 2.0, "fairface": 2.0, "utkface": 2.0}


def noisy_image(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``clamp(x + sigma * N(0, 1), 0, 1)``, same shape as ``x``."""
    if generator is None:  # randn_like keeps the batch axis dynamic in an ONNX export
        noise = torch.randn_like(x)
    else:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + sigma * noise).clamp_(0.0, 1.0)


class NoisyImage(nn.Module):
    """The parameter-free obfuscator of ``image_noise``; active in training and evaluation alike."""

    def __init__(self, image_shape: tuple[int, int, int], sigma: float) -> None:
        super().__init__()
        if not sigma > 0:
            raise ConfigError(f"method_args.sigma of image_noise must be > 0, got {sigma}")
        self.image_shape = tuple(image_shape)
        self.z_shape = self.image_shape
        self.sigma = float(sigma)
        self.random_ops = ("noise",)  # for the export manifest: z differs at every run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return noisy_image(x, self.sigma)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


@METHODS.register("image_noise")
class ImageNoise(WholeNetworkMethod):
    name = "image_noise"
    args = {"sigma": MethodArg(float, per_dataset(SIGMA, "sigma", "image-noise sigma"), "std of the noise added to the [0, 1] image")}

    def obfuscator(self, info: TaskInfo) -> nn.Module:
        return NoisyImage(info.image_shape, self.options["sigma"])
