"""Checks of setting values, shared by every config section, reduction op and method argument.

A config dataclass declares each field's range next to its default with
:func:`setting`, and calls :func:`check_fields` in ``__post_init__``: a value is
checked where it is defined, whether it came from YAML, ``--set`` or Python.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Demo:
    ...     epochs: int = setting(10, ge=1)
    ...     def __post_init__(self) -> None:
    ...         check_fields(self, "demo")
    >>> Demo(epochs=0)
    Traceback (most recent call last):
    ...
    privsplit.errors.ConfigError: demo.epochs must be >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Union

from .errors import ConfigError

# A name that becomes part of a file name or a module key: no path separators,
# no dots (torch module keys and checkpoint prefixes are dotted), not empty.
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
SCIENTIFIC = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")
NAME_RULE = "1 to 64 letters, digits, '_' or '-' (not starting with '-')"


def setting(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[str, ...] | None = None,
    name: bool = False,
) -> Any:
    """A dataclass field with its allowed values: bounds for numbers
    (``ge``/``gt``/``le``/``lt``), ``choices`` for strings, or ``name=True``
    for a name (:data:`NAME`). ``None`` always passes where the type allows it."""
    rules = {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt, choices=choices).items() if v is not None}
    if name:
        rules["name"] = True
    return dataclasses.field(default=default, metadata={"rules": rules})


def check_fields(obj: Any, section: str) -> None:
    """Check every field of dataclass ``obj`` against its type and rules;
    raises :class:`ConfigError` naming ``section.field``."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        where = f"{section}.{f.name}" if section else f.name
        value = check_type(hints[f.name], getattr(obj, f.name), where)
        setattr(obj, f.name, value)
        check_rules(value, f.metadata.get("rules", {}), where)


def check_rules(value: Any, rules: dict[str, Any], where: str) -> None:
    """Bounds, choices and the name rule of :func:`setting`."""
    if value is None or not rules:
        return
    for key, bound, ok, word in (
        ("ge", rules.get("ge"), lambda v, b: v >= b, ">="),
        ("gt", rules.get("gt"), lambda v, b: v > b, ">"),
        ("le", rules.get("le"), lambda v, b: v <= b, "<="),
        ("lt", rules.get("lt"), lambda v, b: v < b, "<"),
    ):
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"{where} must be {word} {bound}, got {value!r}")
    choices = rules.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where} must be one of {', '.join(map(str, choices))}; got {value!r}")
    if rules.get("name") and not NAME.fullmatch(value):
        raise ConfigError(f"{where} must be a name of {NAME_RULE}; got {value!r}")


def check_type(tp: Any, value: Any, where: str) -> Any:
    """``value`` checked against the type hint ``tp`` (int, float, str, bool,
    Optional/Union, list[...], dict, Any); ints are widened to float; floats
    must be finite. Returns the (possibly widened) value."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return check_type(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        nested = [e for e in errors if e.startswith(f"{where}.")]  # an item of a list was wrong
        raise ConfigError(nested[0] if nested else f"{where} must be {describe(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        item = args[0] if args else Any
        return [check_type(item, v, f"{where}.{i}") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and SCIENTIFIC.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    if tp in (int, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{where} must be {describe(tp)}, got {value!r}")
        if tp is str and not value.strip():
            raise ConfigError(f"{where} must not be empty")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, tp):
            raise ConfigError(f"{where} must be a {tp.__name__}, got {value!r}")
        return value
    raise TypeError(f"unsupported setting type {tp} at {where}")


def describe(tp: Any) -> str:
    """A type hint in words: ``int | None`` -> 'a whole number or null'."""
    words = {int: "a whole number", float: "a number", str: "a string", bool: "true or false", type(None): "null"}
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (list, tuple):
        return "a list"
    return words.get(tp, getattr(tp, "__name__", str(tp)))


def flag(kind: type = int, **rules: float) -> Any:
    """An argparse ``type`` for a number flag with :func:`setting`'s bounds:
    ``p.add_argument("--epochs", type=flag(int, ge=1))``. A bad value is
    argparse's one-line usage error."""
    import argparse

    def parse(text: str) -> Any:
        try:
            value = check_type(kind, yaml_number(text), "the value")
            check_rules(value, rules, "the value")
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e).replace("the value ", "")) from None
        return value

    parse.__name__ = describe(kind)  # argparse names the type in its errors
    return parse


def yaml_number(text: str) -> Any:
    """``text`` as an int or float where it is one, else the text itself."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text
