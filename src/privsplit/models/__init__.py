"""Backbones, their split points, and the networks built around them."""

from .backbones import (
    BACKBONES,
    build_backbone,
    representation_shape,
    split_backbone,
    split_points,
)
from .decoder import Decoder

__all__ = [
    "BACKBONES",
    "Decoder",
    "build_backbone",
    "representation_shape",
    "split_backbone",
    "split_points",
]
