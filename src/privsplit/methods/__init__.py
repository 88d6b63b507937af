"""Methods: ``ours`` and the baselines, all behind :class:`Method`."""

from .base import METHODS, Method, SplitModel
from . import ours  # noqa: F401  (registers it)


def build_method(cfg) -> Method:  # noqa: ANN001
    """The method named by ``cfg.method``."""
    return METHODS.get(cfg.method)(cfg)


__all__ = ["METHODS", "Method", "SplitModel", "build_method"]
