"""A layer of the IR: :class:`NodeSpec`, an op name with its resolved attributes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from morphsearch.arch.ops import OpError, resolve_attrs
from morphsearch.errors import InvalidArchitecture

__all__ = ["NodeSpec", "json_digest"]


@dataclass(frozen=True, eq=False)
class NodeSpec:
    """One layer: an op name and its attributes (JSON values, defaults filled in).

    ``NodeSpec("linear", {"out_features": 8})`` equals
    ``NodeSpec("linear", {"out_features": 8, "bias": True})``.

    Raises:
        InvalidArchitecture: unknown op, unknown/missing attribute or invalid value.
    """

    op: str
    attrs: Mapping[str, Any]

    def __init__(self, op: str, attrs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        try:
            resolved = resolve_attrs(op, {**(attrs or {}), **kwargs})
        except OpError as exc:
            raise InvalidArchitecture(str(exc)) from None
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "attrs", MappingProxyType(resolved))
        object.__setattr__(self, "_key", json.dumps([op, resolved], sort_keys=True))

    def __getitem__(self, name: str) -> Any:
        return self.attrs[name]

    def replace(self, **attrs: Any) -> NodeSpec:
        """A copy with some attributes changed."""
        return NodeSpec(self.op, {**self.attrs, **attrs})

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, **self.attrs}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeSpec) and self._key == other._key  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.attrs.items())
        return f"NodeSpec({self.op!r}{', ' if args else ''}{args})"


def json_digest(obj: Any) -> str:
    """sha256 of a JSON value in canonical form."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()
