"""One small generic registry: every pluggable kind (ops, backbones, datasets,
methods, attacks) is looked up by name through one of these."""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories.

    Example:
        >>> OPS = Registry("reduction op")
        >>> @OPS.register("identity")
        ... class Identity: ...
        >>> OPS.names()
        ['identity']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Register ``factory`` under ``name``; a class also gets ``name`` as its ``name``
        attribute, so that the name is written once, in the decorator."""

        def add(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if isinstance(factory, type):
                own = factory.__dict__.get("name")
                if own is not None and own != name:
                    raise ValueError(f"{self.kind} {factory.__name__} is registered as {name!r} but names itself {own!r}")
                factory.name = name  # type: ignore[attr-defined]
            self._entries[name] = factory
            return factory

        return add

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}"
            ) from None

    def create(self, name: str, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
