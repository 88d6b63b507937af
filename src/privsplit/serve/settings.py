"""Checks of the server's settings and token: one-line :class:`PrivsplitError` s."""

import math
from pathlib import Path
from typing import Any

from privsplit_edge import protocol as wire

from ..errors import PrivsplitError
from .protocol import EdgeError


def check_token(token: str, where: str) -> str:
    """``token`` if it is a usable bearer token (:func:`privsplit_edge.protocol.check_token`)."""
    try:
        return wire.check_token(token, where)
    except EdgeError as e:
        raise PrivsplitError(str(e)) from None


def read_token(path: str | Path) -> str:
    """The bearer token in ``path`` (:func:`privsplit_edge.protocol.read_token`)."""
    try:
        return wire.read_token(path)
    except EdgeError as e:
        raise PrivsplitError(str(e)) from None


def check_int(name: str, value: Any, least: int, why: str = "", most: int | None = None) -> None:
    """A one-line :class:`PrivsplitError` unless ``value`` is an int from ``least`` (to ``most``)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < least or (most is not None and value > most):
        span = f"from {least} to {most}" if most is not None else f"at least {least}"
        raise PrivsplitError(f"{name} must be an integer {span}{f' ({why})' if why else ''}, got {value!r}")


def check_seconds(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (0 < value < math.inf):
        raise PrivsplitError(f"{name} must be a positive number of seconds, got {value!r}")


def check_milliseconds(name: str, value: Any, most: float) -> None:
    """A one-line :class:`PrivsplitError` unless ``value`` is a number of milliseconds from 0 to ``most``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (0 <= value <= most):
        raise PrivsplitError(f"{name} must be a number of milliseconds from 0 to {most:g}, got {value!r}")
