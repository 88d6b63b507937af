"""Methods: ``ours`` and the baselines, all behind :class:`Method`."""

from .base import METHODS, Method, MethodArg, SplitModel
from . import ours, resnet18, image_noise, no_noise, maxent, disco, deepobfuscator  # noqa: F401  (registers them)


def build_method(cfg) -> Method:  # noqa: ANN001
    """The method named by ``cfg.method``."""
    return METHODS.get(cfg.method)(cfg)


__all__ = ["METHODS", "Method", "MethodArg", "SplitModel", "build_method"]
