"""The morphism registry: register by name, list, find sites, apply, replay.

A morphism is a pure function parent -> child. Each one is a :class:`Morphism` subclass
registered with :func:`register`; :func:`apply` checks the site and parameters, runs it,
measures how well the child preserves the parent's function on a probe batch, and
returns the child with a JSON :class:`MorphismRecord` that replays it exactly.

Contract of ``Morphism.transform`` (checked by the shared test suite, which is
parametrised over :func:`list_morphisms`, so registering a morphism puts it under test):

* Requires: ``site`` is one of ``sites(parent)``.
* Ensures: the child validates and compiles; the parent is unchanged; with
  ``preserves_function`` the child's output equals the parent's on any input, in train
  and eval mode, to float rounding; the same ``seed`` gives the same child.
"""

from __future__ import annotations

import abc
import functools
import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import torch

from morphsearch.arch import OPS, Architecture
from morphsearch.arch.compile import evaluate
from morphsearch.arch.validate import all_finite
from morphsearch.errors import MorphismNotApplicable, UnknownMorphism

__all__ = [
    "Batch",
    "Morphism",
    "MorphismRecord",
    "MorphismResult",
    "apply",
    "get",
    "list_morphisms",
    "plan",
    "preservation_error",
    "register",
    "replay",
    "sites",
]

Batch = tuple[torch.Tensor, torch.Tensor]
"""``(inputs, targets)``: integer targets are class labels (cross-entropy), float targets
are regression targets (mean squared error)."""


@dataclass(frozen=True)
class MorphismRecord:
    """What lineage stores about one morphism application; JSON-serialisable."""

    name: str
    site: str
    params: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    preservation_error: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "site": self.site,
            "params": dict(self.params),
            "seed": self.seed,
            "preservation_error": self.preservation_error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MorphismRecord:
        return cls(
            name=data["name"],
            site=data["site"],
            params=dict(data.get("params") or {}),
            seed=int(data.get("seed", 0)),
            preservation_error=data.get("preservation_error"),
        )


@dataclass(frozen=True)
class MorphismResult:
    child: Architecture
    record: MorphismRecord


class Morphism(abc.ABC):
    """One way to grow an architecture.

    Subclasses set ``name``, ``preserves_function`` and ``needs_batch``, and implement
    :meth:`sites` and :meth:`transform`. Keyword-only parameters of ``transform`` after
    ``generator`` are the morphism's parameters; their defaults are the defaults.
    """

    name: ClassVar[str]
    preserves_function: ClassVar[bool] = True
    needs_batch: ClassVar[bool] = False
    description: ClassVar[str] = ""

    @abc.abstractmethod
    def sites(self, arch: Architecture) -> list[str]:
        """Where this morphism applies, in a deterministic order."""

    @abc.abstractmethod
    def transform(
        self,
        parent: Architecture,
        site: str,
        *,
        batch: Batch | None,
        generator: torch.Generator,
        **params: Any,
    ) -> Architecture:
        """Build the child. Must not modify ``parent``."""

    def why_not(self, arch: Architecture, site: str) -> str | None:
        """Why ``site`` is not one of ``sites(arch)``, for the error message (None: unknown)."""
        return None

    def preserves(self, params: Mapping[str, Any]) -> bool:
        """Whether the child computes the parent's function (train and eval mode) with
        these parameters; ``preserves_function`` is the answer for the defaults."""
        return self.preserves_function

    def accepts(self, arch: Architecture, site: str) -> bool:
        """Whether ``site`` is one of ``sites(arch)``; override where one site is cheaper
        to test than listing them all (the contract suite checks they agree)."""
        return site in self.sites(arch)

    def param_defaults(self) -> dict[str, Any]:
        return dict(_param_defaults(type(self)))

    def plan(self, parent: Architecture, site: str, **params: Any) -> Architecture:
        """The child's structure, without data: an architecture whose graph (specs,
        structure hash, parameter count) is the child's; its weights are placeholders.

        The default runs :meth:`transform` without a batch (cheap for a morphism that
        needs none); a morphism that needs a batch overrides it, or the driver falls back
        to applying it (``NotImplementedError``).
        """
        if self.needs_batch:
            raise NotImplementedError(f"{self.name} plans its child only with a batch")
        return self.transform(parent, site, batch=None,
                              generator=torch.Generator().manual_seed(0), **params)  # fmt: skip


@functools.cache
def _param_defaults(cls: type[Morphism]) -> Mapping[str, Any]:
    """Keyword-only parameters of ``cls.transform`` and their defaults (read once per
    class: ``inspect.signature`` costs more than a cheap morphism itself)."""
    signature = inspect.signature(cls.transform)
    return MappingProxyType({
        name: p.default
        for name, p in signature.parameters.items()
        if p.kind is p.KEYWORD_ONLY and name not in ("batch", "generator")
    })


_REGISTRY: dict[str, Morphism] = {}
PROBE_SIZE = 64  # inputs used to measure function preservation in apply()


def register(cls: type[Morphism]) -> type[Morphism]:
    """Class decorator: register a morphism under ``cls.name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"morphism {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def list_morphisms() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> Morphism:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownMorphism(
            f"unknown morphism {name!r}; valid morphisms: {', '.join(list_morphisms())}"
        ) from None


def sites(name: str, arch: Architecture) -> list[str]:
    """Where morphism ``name`` applies in ``arch`` (empty if nowhere)."""
    return list(get(name).sites(arch))


def plan(name: str, parent: Architecture, site: str | None = None, **params: Any) -> Architecture:
    """The structure of ``apply(name, parent, site, **params)``'s child, without data:
    the same graph (and structure hash and parameter count), placeholder weights. The
    search's driver decides with it; the worker applies the morphism once and checks the
    planned hash.

    Raises:
        UnknownMorphism, MorphismNotApplicable: as :func:`apply`.
        NotImplementedError: the morphism can plan only with a batch (apply it instead).
    """
    morphism = get(name)
    site = _checked_site(morphism, parent, site)
    return morphism.plan(parent, site, **_checked_params(morphism, params))


def apply(
    name: str,
    parent: Architecture,
    site: str | None = None,
    *,
    batch: Batch | None = None,
    seed: int = 0,
    check: bool = True,
    **params: Any,
) -> MorphismResult:
    """Apply morphism ``name`` to ``parent`` at ``site`` (default: its first site).

    Args:
        name: a registered morphism (see :func:`list_morphisms`).
        parent: the architecture to grow; it is not modified.
        site: a node from ``sites(name, parent)``.
        batch: ``(inputs, targets)``; required by gradient-based morphisms, and used as
            the probe batch for measuring function preservation.
        seed: seeds every random choice; the same seed gives the same child.
        check: measure the preservation error (max |parent - child|, eval mode and,
            with batchnorm, train mode; see :func:`preservation_error`) on up to
            ``PROBE_SIZE`` inputs of the batch (or random inputs); it is stored in the
            record. Growth loops that apply many morphisms may turn it off.
        **params: the morphism's parameters (see ``get(name).param_defaults()``).

    Raises:
        UnknownMorphism: no such morphism (lists the valid ones).
        MorphismNotApplicable: the site, a parameter or a missing batch does not fit
            (lists the valid sites or parameters).
    """
    morphism = get(name)
    site = _checked_site(morphism, parent, site)
    full_params = _checked_params(morphism, params)
    if morphism.needs_batch and batch is None:
        raise MorphismNotApplicable(
            f"{name} needs a data batch: pass batch=(inputs, targets)"
        )
    if batch is not None:
        _check_batch(name, parent, batch)
    generator = torch.Generator().manual_seed(seed)
    child = morphism.transform(parent, site, batch=batch, generator=generator, **full_params)
    error = None
    if check:
        probe = batch[0][:PROBE_SIZE] if batch is not None else _random_probe(parent, seed)
        error = preservation_error(parent, child, probe)
    record = MorphismRecord(name, site, full_params, seed, error)
    return MorphismResult(child, record)


def _check_batch(name: str, parent: Architecture, batch: Batch) -> None:
    """A batch the morphism's gradient pass can use, or a one-line reason why not."""
    try:
        inputs, targets = batch
    except (TypeError, ValueError):
        raise MorphismNotApplicable(
            f"{name}: batch must be a pair (inputs, targets) of tensors"
        ) from None
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise MorphismNotApplicable(f"{name}: batch must be a pair (inputs, targets) of tensors")
    if tuple(inputs.shape[1:]) != tuple(parent.input_shape) or len(inputs) != len(targets):
        raise MorphismNotApplicable(
            f"{name}: batch inputs {tuple(inputs.shape)} with {len(targets)} targets do not "
            f"fit the network's input shape {tuple(parent.input_shape)}; pass [N, "
            f"{', '.join(map(str, parent.input_shape))}] inputs and N targets"
        )
    if inputs.is_floating_point() and not all_finite(inputs):
        raise MorphismNotApplicable(f"{name}: the batch inputs contain NaN or infinite values")
    if targets.is_floating_point() and not all_finite(targets):
        raise MorphismNotApplicable(f"{name}: the batch targets contain NaN or infinite values")
    if not targets.is_floating_point():
        _check_labels(name, parent, targets)
    if len(inputs) < 2 and _uses_batch_statistics(parent.ops):
        raise MorphismNotApplicable(
            f"{name}: batchnorm needs a batch of at least 2 samples, got {len(inputs)}"
        )


def _uses_batch_statistics(ops: frozenset[str]) -> bool:
    """Whether train mode differs from eval mode by using the batch's statistics."""
    return any(OPS[op].batch_statistics for op in ops)


def _check_labels(name: str, parent: Architecture, labels: torch.Tensor) -> None:
    """Integer targets are class labels: one per output position, in [0, classes)."""
    shape = tuple(parent.output_shape)
    if tuple(labels.shape[1:]) != shape[1:]:
        raise MorphismNotApplicable(
            f"{name}: integer targets are class labels, one per output position: shape "
            f"[N{''.join(f', {d}' for d in shape[1:])}] for this network's outputs "
            f"{shape}, got {tuple(labels.shape)}"
        )
    classes = shape[0] if shape else 1
    if labels.numel():
        low, high = (int(v) for v in torch.aminmax(labels))
        if low < 0 or high >= classes:
            raise MorphismNotApplicable(
                f"{name}: integer targets are class labels and must be in [0, {classes}) "
                f"for this network's {classes} outputs, got labels {low}..{high}"
            )


def replay(
    record: MorphismRecord | Mapping[str, Any],
    parent: Architecture,
    *,
    batch: Batch | None = None,
) -> MorphismResult:
    """Re-apply a recorded morphism; with the same parent and batch, the same child."""
    if not isinstance(record, MorphismRecord):
        record = MorphismRecord.from_json(record)
    return apply(record.name, parent, record.site, batch=batch, seed=record.seed, **record.params)


def preservation_error(
    parent: Architecture, child: Architecture, inputs: torch.Tensor
) -> float:
    """Max absolute difference of parent and child outputs on ``inputs``: in eval mode,
    and also in train mode (batch statistics, dropout off) where either has batchnorm
    (elsewhere the two modes compute the same function)."""
    dtype = parent.dtype
    if child.dtype != dtype:
        child = child.to(dtype)
    modes = [False, True] if _uses_batch_statistics(parent.ops | child.ops) else [False]
    error = 0.0
    with torch.no_grad():  # the compiled modules' function, without building them
        for train in modes:
            a = evaluate(parent, inputs, train=train, dropout=False)
            b = evaluate(child, inputs, train=train, dropout=False)
            if a.shape != b.shape:
                return float("inf")
            if a.numel():
                error = max(error, float(torch.linalg.vector_norm(a - b, math.inf)))
    return error


def _random_probe(arch: Architecture, seed: int, n: int = PROBE_SIZE) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed + 7919)
    return torch.randn((n, *arch.input_shape), generator=generator, dtype=arch.dtype)


def _checked_site(morphism: Morphism, parent: Architecture, site: str | None) -> str:
    if site is not None and site in parent and morphism.accepts(parent, site):
        return site
    valid = morphism.sites(parent)
    if not valid:
        reason = morphism.why_not(parent, site) if site is not None and site in parent else None
        raise MorphismNotApplicable(
            f"{morphism.name} does not apply anywhere in this architecture"
            + (f" ({reason})" if reason else "")
        )
    if site is None:
        return valid[0]
    if site not in valid:
        reason = morphism.why_not(parent, site) if site in parent else f"there is no node {site!r}"
        raise MorphismNotApplicable(
            f"{morphism.name} does not apply at {site!r}"
            + (f" ({reason})" if reason else "")
            + f"; valid sites: {', '.join(valid)}"
        )
    return site


def _checked_params(morphism: Morphism, params: Mapping[str, Any]) -> dict[str, Any]:
    defaults = morphism.param_defaults()
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise MorphismNotApplicable(
            f"{morphism.name} has no parameter {unknown[0]!r}; "
            f"valid parameters: {', '.join(sorted(defaults)) or 'none'}"
        )
    return {**defaults, **params}


def describe(names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Name, description, defaults and flags of each morphism (for docs and the CLI)."""
    out = []
    for name in names or list_morphisms():
        m = get(name)
        out.append({
            "name": name,
            "description": m.description,
            "preserves_function": m.preserves_function,
            "needs_batch": m.needs_batch,
            "params": m.param_defaults(),
        })
    return out
