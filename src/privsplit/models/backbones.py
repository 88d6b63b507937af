"""Backbones and the one way to cut them.

A backbone is described as an ordered list of *stages*; the split point
``<prefix>_<k>`` puts the first ``k`` stages on the client (the encoder) and the
rest on the server (the head). Building the whole network once and cutting it
keeps the weight initialisation identical to the uncut network.

Example:
    >>> encoder, head = split_backbone("resnet18", "rn18_3", num_classes=2)
    >>> representation_shape("resnet18", "rn18_3", (178, 178))
    (256, 12, 12)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torchvision import models as tvm

from ..errors import ConfigError
from ..registry import Registry
from .unet import UNet


@dataclass(frozen=True)
class BackboneSpec:
    """How to build a backbone as stages, and where it may be cut."""

    stages: Callable[[int], list[nn.Module]]
    split_points: dict[str, int]  # split point name -> number of client stages


BACKBONES: Registry[BackboneSpec] = Registry("backbone")


def _resnet_stages(factory: Callable[..., tvm.ResNet]) -> Callable[[int], list[nn.Module]]:
    def stages(num_classes: int) -> list[nn.Module]:
        m = factory(weights=None, num_classes=num_classes)
        return [
            nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1),
            m.layer2,
            m.layer3,
            # Stage 4 ends with global pooling, so its head is only the linear layer.
            nn.Sequential(m.layer4, m.avgpool, nn.Flatten(1)),
            m.fc,
        ]

    return stages


for _name, _prefix, _factory in [
    ("resnet18", "rn18", tvm.resnet18),
    ("resnet34", "rn34", tvm.resnet34),
    ("resnet50", "rn50", tvm.resnet50),
]:
    BACKBONES.register(_name)(
        lambda _f=_factory, _p=_prefix: BackboneSpec(
            _resnet_stages(_f), {f"{_p}_{k}": k for k in range(1, 5)}
        )
    )


@BACKBONES.register("mobilenet_v2")
def _mobilenet_v2() -> BackboneSpec:
    def stages(num_classes: int) -> list[nn.Module]:
        f = tvm.mobilenet_v2(weights=None, num_classes=num_classes).features
        classifier = tvm.mobilenet_v2(weights=None, num_classes=num_classes).classifier
        # Cut points follow the resolution changes (strides 2, 4, 8, 16, 32).
        return [
            f[:2],
            f[2:4],
            f[4:7],
            f[7:14],
            nn.Sequential(f[14:], nn.AdaptiveAvgPool2d(1), nn.Flatten(1)),
            classifier,
        ]

    return BackboneSpec(stages, {f"mbv2_{k}": k for k in range(1, 6)})


@BACKBONES.register("alexnet")
def _alexnet() -> BackboneSpec:
    def stages(num_classes: int) -> list[nn.Module]:
        m = tvm.alexnet(weights=None, num_classes=num_classes)
        f = m.features
        return [f[:3], f[3:6], f[6:], nn.Sequential(m.avgpool, nn.Flatten(1), m.classifier)]

    return BackboneSpec(stages, {f"alex_{k}": k for k in range(1, 4)})


@BACKBONES.register("unet")
def _unet() -> BackboneSpec:
    # The U-Net maps the image to an image-sized representation; the server
    # then runs a whole ResNet18 on it.
    def stages(num_classes: int) -> list[nn.Module]:
        return [UNet(channels=3), tvm.resnet18(weights=None, num_classes=num_classes)]

    return BackboneSpec(stages, {"unet": 1})


def split_points(backbone: str) -> list[str]:
    """The split point names a backbone accepts."""
    return list(BACKBONES.create(backbone).split_points)


def _cut_index(spec: BackboneSpec, backbone: str, split_point: str) -> int:
    if split_point not in spec.split_points:
        raise ConfigError(
            f"unknown split point {split_point!r} for backbone {backbone!r}; "
            f"valid choices: {', '.join(spec.split_points)}"
        )
    return spec.split_points[split_point]


def build_backbone(backbone: str, num_classes: int) -> nn.Module:
    """The whole, uncut network."""
    _check_classes(num_classes)
    return nn.Sequential(*BACKBONES.create(backbone).stages(num_classes))


def split_backbone(backbone: str, split_point: str, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """Cut ``backbone`` at ``split_point`` into ``(encoder, head)``."""
    _check_classes(num_classes)
    spec = BACKBONES.create(backbone)
    k = _cut_index(spec, backbone, split_point)
    stages = spec.stages(num_classes)
    return nn.Sequential(*stages[:k]), nn.Sequential(*stages[k:])


def build_head(backbone: str, split_point: str, num_classes: int) -> nn.Module:
    """A freshly initialised copy of the backbone's rest (the server side)."""
    return split_backbone(backbone, split_point, num_classes)[1]


def output_shape(module: nn.Module, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape (without batch) of ``module``'s output, computed on the meta
    device: no weights are touched and nothing is computed."""
    try:
        with torch.no_grad():
            meta = _to_meta(module)
            out = meta(torch.empty((2, *in_shape), device="meta"))
    except RuntimeError as e:
        raise ConfigError(
            f"an input of shape {tuple(in_shape)} does not fit this network ({_first_line(e)}); "
            "use a larger data.image_size"
        ) from None
    return tuple(out.shape[1:])


def representation_shape(
    backbone: str, split_point: str, image_size: tuple[int, int], channels: int = 3
) -> tuple[int, ...]:
    """Shape of the encoder's output ``z`` for one image of ``image_size``
    (height, width), without building real weights."""
    with torch.device("meta"):
        encoder, _ = split_backbone(backbone, split_point, num_classes=2)
    return output_shape(encoder, (channels, *image_size))


def _to_meta(module: nn.Module) -> nn.Module:
    if all(p.device.type == "meta" for p in module.parameters()):
        return module
    import copy

    with torch.device("meta"):
        clone = copy.deepcopy(module).to("meta")
    return clone


def _check_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
