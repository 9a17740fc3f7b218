"""Widening morphisms: append ``k`` units (channels) to a units layer (``linear``,
``conv1d``, ``conv2d``: ``OPS[op].is_layer``).

Sites (all three operators): every units layer whose units flow only through per-unit
ops (activations, batchnorm, dropout, pooling, global average pooling, at most one
``flatten``) into other units layers. A layer
whose units reach ``add`` or ``concat`` (residual or concatenated widths are tied),
``layernorm`` or the network output is not offered: widening it alone could not keep
the function. Inside a residual block of :func:`morphsearch.builders.resnet`, the first
conv of each block is a site; the second (which feeds the ``add``) is not.

New units are appended at the end of the site's output axis; existing units keep their
indices, so optimizer state carries over by zero-padding. Every operator here
preserves the function exactly (train and eval mode):

* zero incoming weights and zero bias give a zero pre-activation; every IR activation
  has f(0) = 0; new batchnorm channels (weight 1, bias 0, mean 0, var 1) map a zero
  channel to zero in eval mode and, because the batch mean is 0 too, in train mode;
  dropout and pooling keep zeros; so the new units send exact zeros downstream;
* or zero outgoing weights, whatever the new units compute;
* or duplicated units whose outgoing weights are divided among the copies.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import torch

from morphsearch.arch import Architecture
from morphsearch.errors import MorphismNotApplicable
from morphsearch.morphisms._gradmax_matrix import (
    gradmax_matrix,
    gradmax_singular_values,
    path_gradmax_matrix,
    split_rows,
)
from morphsearch.morphisms._registry import Batch, Morphism, register
from morphsearch.morphisms._surgery import (
    WidenPath,
    mean_outgoing_norm,
    outgoing_shapes,
    path_params_copy,
    set_unit_outgoing,
    site_rows_shape,
    unit_outgoing,
    why_not_widen,
    widen_path,
    widen_sites,
    widened,
)

__all__ = ["GradMaxWiden", "RandomWiden", "SplitWiden", "gradmax_matrix",
           "gradmax_singular_values"]

_SCALE_MODES = ("mean", "fixed")


def _check_k(name: str, k: int, limit: int | None = None) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise MorphismNotApplicable(f"{name}: k={k!r} must be a positive int")
    if limit is not None and k > limit:
        raise MorphismNotApplicable(f"{name}: k={k} is more than the {limit} available directions")


def _target_norm(name: str, scale: float, scale_mode: str, reference: float) -> float:
    """``scale`` itself ("fixed") or ``scale`` times the existing units' mean norm ("mean")."""
    if scale_mode not in _SCALE_MODES:
        raise MorphismNotApplicable(
            f"{name}: scale_mode={scale_mode!r} is not one of {', '.join(_SCALE_MODES)}"
        )
    return float(scale) * (reference if scale_mode == "mean" else 1.0)


def _mean_incoming_norm(arch: Architecture, site: str) -> float:
    weight = arch.weights[site]["weight"]
    return float(weight.reshape(weight.shape[0], -1).norm(dim=1).mean())


class _Widening(Morphism):
    """Shared by the widening morphisms: the sites are the layers :func:`widen_path` accepts."""

    def sites(self, arch: Architecture) -> list[str]:
        return widen_sites(arch)

    def why_not(self, arch: Architecture, site: str) -> str | None:
        return why_not_widen(arch, site)

    def accepts(self, arch: Architecture, site: str) -> bool:
        return why_not_widen(arch, site) is None

    def plan(self, parent: Architecture, site: str, **params: Any) -> Architecture:
        """``k`` more units at ``site``, zero weights (the structure only; no batch)."""
        k = len(params["units"]) if params.get("units") else params.get("k", 1)
        wp = widen_path(parent, site)
        shapes = outgoing_shapes(parent, wp)
        # GradMax has as many directions as outgoing weights per unit
        _check_k(self.name, k, sum(math.prod(s) for s in shapes) if self.needs_batch else None)
        zeros = torch.zeros(k, *site_rows_shape(parent, site), dtype=parent.dtype)
        return widened(parent, wp, zeros, None,
                       [torch.zeros(k, *s, dtype=parent.dtype) for s in shapes])


@register
class RandomWiden(_Widening):
    """Add ``k`` units with one side zero (or ``eps``) and the other random.

    Params:
        k: number of new units (channels).
        zero: ``"incoming"`` (default; new units output zero, outgoing weights random) or
            ``"outgoing"`` (incoming weights random, outgoing zero).
        scale, scale_mode: each new unit's random weights get norm ``scale`` ("fixed")
            or ``scale`` times the mean norm of the existing units' weights on the same
            side ("mean", the default, as in GradMax's comparisons).
        eps: with ``zero="incoming"``, the new units' incoming weights are a random
            direction of norm ``eps`` instead of zero (symmetry breaking for activations
            whose derivative at 0 is 0). Exactly preserving only at ``eps=0`` (default);
            otherwise the function moves by O(eps).
    """

    name = "widen.random"
    description = "append k units, zero (or eps) on one side and random on the other"

    def preserves(self, params: Mapping[str, Any]) -> bool:
        return not params.get("eps")

    def transform(  # type: ignore[override]  # params are keyword-only by contract
        self,
        parent: Architecture,
        site: str,
        *,
        batch: Batch | None,
        generator: torch.Generator,
        k: int = 1,
        zero: str = "incoming",
        scale: float = 1.0,
        scale_mode: str = "mean",
        eps: float = 0.0,
    ) -> Architecture:
        _check_k(self.name, k)
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
            raise MorphismNotApplicable(f"{self.name}: eps={eps!r} must be a number >= 0")
        if eps and zero != "incoming":
            raise MorphismNotApplicable(
                f"{self.name}: eps={eps!r} sets the incoming weights; it needs zero='incoming'"
            )
        wp = widen_path(parent, site)
        dtype = parent.dtype
        rows = site_rows_shape(parent, site)
        shapes = outgoing_shapes(parent, wp)
        d_out = sum(math.prod(s) for s in shapes)
        if zero == "incoming":
            c = _target_norm(self.name, scale, scale_mode, mean_outgoing_norm(parent, wp))
            out = _random_directions(k, d_out, generator, dtype) * c
            incoming = torch.zeros(k, *rows, dtype=dtype)
            if eps:  # drawn after the outgoing directions: those do not depend on eps
                directions = _random_directions(k, math.prod(rows), generator, dtype)
                incoming = (directions * float(eps)).reshape(k, *rows)
            return widened(parent, wp, incoming, None, split_rows(out, shapes))
        if zero == "outgoing":
            c = _target_norm(self.name, scale, scale_mode, _mean_incoming_norm(parent, site))
            d_in = math.prod(rows)
            incoming = (_random_directions(k, d_in, generator, dtype) * c).reshape(k, *rows)
            zeros = torch.zeros(k, d_out, dtype=dtype)
            return widened(parent, wp, incoming, None, split_rows(zeros, shapes))
        raise MorphismNotApplicable(
            f"{self.name}: zero={zero!r} must be 'incoming' or 'outgoing'"
        )


def _random_directions(
    k: int, dim: int, generator: torch.Generator, dtype: torch.dtype
) -> torch.Tensor:
    """``k`` independent unit vectors, uniform on the sphere."""
    vecs = torch.randn(k, dim, generator=generator, dtype=torch.float64)
    return (vecs / vecs.norm(dim=1, keepdim=True)).to(dtype)


@register
class SplitWiden(_Widening):
    """Net2Wider: duplicate existing units and share their outgoing weights.

    Params:
        k: number of new units; each duplicates a unit drawn uniformly (with
            replacement) by the seed, unless ``units`` is given.
        units: explicit list of unit indices to duplicate (overrides ``k``).
        noise: symmetry breaking that keeps the function: each copy's outgoing weights
            get ``noise * w/n * N(0, 1)`` added and the original the opposite sum, so the
            copies (which compute identical activations) still sum to ``w``.
    """

    name = "widen.split"
    description = "Net2Wider: duplicate units, divide their outgoing weights"

    def transform(  # type: ignore[override]  # params are keyword-only by contract
        self,
        parent: Architecture,
        site: str,
        *,
        batch: Batch | None,
        generator: torch.Generator,
        k: int = 1,
        units: list[int] | None = None,
        noise: float = 0.0,
    ) -> Architecture:
        wp = widen_path(parent, site)
        chosen = _chosen_units(self.name, wp, k, units, generator)
        counts = Counter(chosen)
        weights = parent.weights_copy()
        copies: dict[int, list[list[torch.Tensor]]] = {}
        for unit, n_copies in sorted(counts.items()):
            shares = _shares(parent, wp, unit, n_copies + 1, noise, generator)
            for c, share in zip(wp.consumers, shares[0], strict=True):
                set_unit_outgoing(weights[c.node]["weight"], c, unit, share)
            copies[unit] = shares[1:]
        by_position = [copies[u].pop(0) for u in chosen]
        scaled = parent.with_weights(weights)
        site_w = parent.weights[site]
        idx = torch.tensor(chosen, dtype=torch.long)
        outgoing = [torch.stack([c[j] for c in by_position]) for j in range(len(wp.consumers))]
        bias = site_w["bias"].index_select(0, idx) if "bias" in site_w else None
        return widened(scaled, wp, site_w["weight"].index_select(0, idx), bias, outgoing,
                       path_params_copy(parent, wp, chosen))


def _chosen_units(
    name: str, wp: WidenPath, k: int, units: list[int] | None, generator: torch.Generator
) -> list[int]:
    if units is None:
        _check_k(name, k)
        return [int(u) for u in torch.randint(wp.width, (k,), generator=generator)]
    bad = [u for u in units if not isinstance(u, int) or not 0 <= u < wp.width]
    if not units or bad:
        raise MorphismNotApplicable(
            f"{name}: units={units!r} must be a non-empty list of ints in [0, {wp.width})"
        )
    return list(units)


def _shares(
    parent: Architecture, wp: WidenPath, unit: int, n: int, noise: float,
    generator: torch.Generator,
) -> list[list[torch.Tensor]]:
    """Outgoing weights of the original (first) and its ``n - 1`` copies; they sum to w."""
    base = [w / n for w in unit_outgoing(parent, wp, unit)]
    shares = [[b.clone() for b in base] for _ in range(n)]
    for j in range(1, n):
        for i, b in enumerate(base):
            delta = noise * b * torch.randn(b.shape, generator=generator, dtype=b.dtype)
            shares[j][i] += delta
            shares[0][i] -= delta
    return shares


# ----------------------------------------------------------------------- GradMax


@register
class GradMaxWiden(_Widening):
    """GradMax (Evci et al., 2022): zero incoming weights, outgoing weights along the
    top-``k`` left singular vectors of :func:`gradmax_matrix`, which maximises the
    gradient norm of the new incoming weights (eq. 11). Exactly preserving.

    Params:
        k: number of new units.
        scale, scale_mode: each new unit's outgoing weights get norm ``scale`` ("fixed")
            or ``scale`` times the mean outgoing norm of existing units ("mean", default).
    """

    name = "widen.gradmax"
    needs_batch = True
    description = "GradMax: zero incoming, outgoing = top singular vectors of dL/dz h^T"

    def transform(  # type: ignore[override]  # params are keyword-only by contract
        self,
        parent: Architecture,
        site: str,
        *,
        batch: Batch | None,
        generator: torch.Generator,
        k: int = 1,
        scale: float = 1.0,
        scale_mode: str = "mean",
    ) -> Architecture:
        if batch is None:
            raise MorphismNotApplicable(f"{self.name} needs a batch=(inputs, targets)")
        wp = widen_path(parent, site)
        matrix = path_gradmax_matrix(parent, wp, batch)
        _check_k(self.name, k, matrix.shape[0])
        c = _target_norm(self.name, scale, scale_mode, mean_outgoing_norm(parent, wp))
        u, _, _ = torch.linalg.svd(matrix, full_matrices=True)
        directions = _fixed_signs(u[:, :k].T)
        rows = site_rows_shape(parent, site)
        zeros = torch.zeros(k, *rows, dtype=parent.dtype)
        return widened(parent, wp, zeros, None,
                       split_rows(directions * c, outgoing_shapes(parent, wp)))


def _fixed_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Flip each row so its largest-magnitude entry is positive (SVD signs are arbitrary)."""
    pivot = vectors.gather(1, vectors.abs().argmax(dim=1, keepdim=True))
    return vectors * pivot.sign()  # sign 0 only for an all-zero row, which stays zero
