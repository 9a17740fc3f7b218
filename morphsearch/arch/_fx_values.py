"""The values a traced call has in the IR, and what a rule may ask of the converter.

Shared by :mod:`morphsearch.arch._fx_rules` (the rules) and
:mod:`morphsearch.arch.fx_import` (the converter that runs them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import fx

__all__ = ["Batch", "Context", "Refusal", "Rule", "Sizes", "Value", "arg", "per_dim", "require"]


class Refusal(Exception):
    """A call the IR cannot express; the message says why and what to do instead."""


@dataclass(frozen=True)
class Value:
    """A tensor in the IR: the output of IR node ``name``.

    ``squeezed``: torch keeps trailing size-1 dims that the IR dropped (an adaptive
    average pool to 1 is the IR's ``global_avgpool``, whose output is ``(C,)``, where
    torch's is ``(C, 1, 1)``); only a flatten may consume it, and that flatten is then
    a no-op.
    """

    name: str
    squeezed: bool = False


@dataclass(frozen=True)
class Batch:
    """``x.size(0)`` / ``x.shape[0]``: the batch size, only known at run time."""


@dataclass(frozen=True)
class Sizes:
    """``x.size()`` / ``x.shape`` of a tensor whose shape (batch first) is ``shape``."""

    shape: tuple[int, ...]


class Context(Protocol):
    """What a rule may ask of the converter."""

    def tensor(self, arg: Any) -> Value:
        """The IR value of a tensor argument (refuses constants and squeezed values)."""

    def resolve(self, arg: Any) -> Any:
        """An argument with every fx node replaced by its value."""

    def shape(self, arg: Any) -> tuple[int, ...]:
        """The torch shape (batch first) of a tensor argument or node on the example."""

    def emit(self, op: str, inputs: Sequence[Value], attrs: Mapping[str, Any] | None = None,
             weights: Mapping[str, torch.Tensor] | None = None) -> Value:
        """Add an IR node for the current fx node; returns its value."""


Rule = Callable[[Context, fx.Node, Any], Any]


def arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    """A call's argument by position or keyword (fx keeps them as written)."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def per_dim(value: Any) -> int | list[int]:
    """An int, or a per-dimension list (one int where every dimension agrees)."""
    if isinstance(value, int):
        return value
    values = [int(v) for v in value]
    return values[0] if len(set(values)) == 1 else values


def require(ok: bool, message: str) -> None:
    if not ok:
        raise Refusal(message)
