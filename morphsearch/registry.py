"""One small registry for the things a config names: datasets, seed builders, triggers.

A :class:`Registry` maps a name to an entry. Entries register with a decorator; an
unknown name raises :class:`~morphsearch.errors.ConfigError` listing the valid names,
so configs can validate a name against the registry instead of a hard-coded ``Literal``.
Morphisms keep their own richer registry (:mod:`morphsearch.morphisms._registry`).

>>> shapes: Registry[int] = Registry("shape")
>>> _ = shapes.add("square", 4)
>>> shapes.get("square")
4
>>> shapes.get("circle")
Traceback (most recent call last):
...
morphsearch.errors.ConfigError: unknown shape 'circle'; valid shapes: square
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from morphsearch.errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` is used in error messages: "dataset")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``.

        Raises:
            ValueError: ``name`` is already registered (a programming error, not a user's).
        """
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def decorate(entry: T) -> T:
            return self.add(name, entry)

        return decorate

    def get(self, name: str) -> T:
        """The entry registered as ``name``.

        Raises:
            ConfigError: no such name; the message lists the valid ones.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(self.unknown(name)) from None

    def unknown(self, name: str) -> str:
        """The one-line message for an unknown ``name`` (for validators that re-raise)."""
        return f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}"

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
