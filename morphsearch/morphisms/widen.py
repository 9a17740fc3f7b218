"""Widening morphisms: append ``k`` units (channels) to a ``linear``/``conv2d`` layer.

Sites (all three operators): every ``linear``/``conv2d`` node whose units flow only
through per-unit ops (activations, batchnorm, dropout, pooling, global average
pooling, at most one ``flatten``) into other ``linear``/``conv2d`` layers. A layer
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

import itertools
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from morphsearch.arch import Architecture
from morphsearch.arch.compile import evaluate
from morphsearch.errors import MorphismNotApplicable
from morphsearch.losses import task_loss_grad
from morphsearch.morphisms._registry import Batch, Morphism, register
from morphsearch.morphisms._surgery import (
    WidenPath,
    batch_loss,
    fixed_dropout,
    gradients_on,
    mean_outgoing_norm,
    outgoing_shapes,
    path_params_copy,
    set_unit_outgoing,
    site_rows_shape,
    unit_outgoing,
    usable_batch,
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


def _split_rows(vectors: torch.Tensor, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """``[k, d_out]`` flat outgoing vectors -> per consumer ``[k, *shape]``."""
    out, start = [], 0
    for shape in shapes:
        n = math.prod(shape)
        out.append(vectors[:, start : start + n].reshape(len(vectors), *shape))
        start += n
    return out


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
            return widened(parent, wp, incoming, None, _split_rows(out, shapes))
        if zero == "outgoing":
            c = _target_norm(self.name, scale, scale_mode, _mean_incoming_norm(parent, site))
            d_in = math.prod(rows)
            incoming = (_random_directions(k, d_in, generator, dtype) * c).reshape(k, *rows)
            zeros = torch.zeros(k, d_out, dtype=dtype)
            return widened(parent, wp, incoming, None, _split_rows(zeros, shapes))
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


def gradmax_matrix(arch: Architecture, site: str, batch: Batch) -> torch.Tensor:
    """The matrix ``M = E[dL/dz_{l+1} h_{l-1}^T]`` of GradMax (eq. 11), generalised.

    Row ``j`` is the gradient of the batch loss w.r.t. the incoming weights of one new
    unit with zero incoming weights whose outgoing weights are the ``j``-th basis
    vector: the auxiliary-matrix trick (appendix A) done with ``d_out`` new units in one
    backward pass. Because autograd runs through the real path, activations with
    f'(0) != 1, batchnorm in train mode (the ``1/sqrt(eps)`` scale and the centring of
    appendix C), pooling and the flatten boundary are all exact; for a conv site the
    rows are im2col-flattened filters (appendix B).

    Where the path is a chain of activations with a known f'(0), batchnorms and at most
    one flatten (linear -> act -> linear, conv -> [bn] -> act -> conv, conv -> act ->
    flatten -> linear, ...), the same matrix is computed in closed form from one
    backward pass of the parent (no auxiliary network; see
    :func:`_closed_form_gradmax_matrix`); pooling, dropout and branching paths take the
    auxiliary route.

    Args:
        arch: the network; unchanged.
        site: a widen site.
        batch: ``(inputs, targets)``; the loss is the batch mean (train mode).

    Returns:
        ``[d_out, d_in]`` with ``d_out`` the size of one unit's outgoing weights and
        ``d_in`` of its incoming weights.
    """
    return _gradmax_matrix(arch, widen_path(arch, site), batch)


def _gradmax_matrix(arch: Architecture, wp: WidenPath, batch: Batch) -> torch.Tensor:
    form = _closed_form(arch, wp)
    if form is not None:
        return _closed_form_gradmax_matrix(arch, wp, batch, form)
    return _auxiliary_gradmax_matrix(arch, wp, batch)


def _auxiliary_gradmax_matrix(arch: Architecture, wp: WidenPath, batch: Batch) -> torch.Tensor:
    """The general case: one backward pass through an auxiliary widened network."""
    site = wp.site
    dtype = arch.dtype
    shapes = outgoing_shapes(arch, wp)
    d_out = sum(math.prod(s) for s in shapes)
    rows = site_rows_shape(arch, site)
    with gradients_on(), fixed_dropout(arch):
        aux = widened(arch, wp, torch.zeros(d_out, *rows, dtype=dtype), None,
                      _split_rows(torch.eye(d_out, dtype=dtype), shapes))
        module = aux.to_module().train()
        weight = module.get_submodule(f"layers.{site}").weight
        assert isinstance(weight, torch.Tensor)
        inputs, targets = usable_batch(batch)
        loss = batch_loss(module(inputs.to(dtype)), targets)
        (grad,) = torch.autograd.grad(loss, weight)
    return grad[wp.width :].reshape(d_out, -1).detach()


# Activations with a known, exact derivative at 0 (the IR's relu is clamp: 1 at 0;
# gelu'(0) = Phi(0) = 1/2).
_SLOPE_AT_ZERO = {"relu": 1.0, "tanh": 1.0, "identity": 1.0, "gelu": 0.5}


@dataclass(frozen=True)
class _ClosedForm:
    """How the path acts on the gradient of a new, all-zero unit (a linear map).

    ``scale``: the product of f'(0) of the activations and ``1/sqrt(eps)`` of the new
    batchnorm channels (weight 1, batch variance 0). ``centre``: batchnorm in train mode
    also subtracts the mean of the gradient, over the batch and the spatial positions of
    its channel (``"units"``, batchnorm before any flatten) or over the batch alone
    (``"features"``, a batchnorm after the flatten; it implies the other); None: no
    batchnorm on the path.
    """

    scale: float
    centre: str | None


def _closed_form(arch: Architecture, wp: WidenPath) -> _ClosedForm | None:
    """The path's action when :func:`gradmax_matrix` has a closed form, else None.

    Closed forms: the site (linear or conv2d) feeds a chain of activations with a known
    f'(0), batchnorms and, after a conv site, at most one flatten; the end of the chain
    feeds only the consumers (linear or conv2d). Pooling, dropout or a branching path
    go through the auxiliary network.
    """
    site_op = arch.op(wp.site)
    chain = [wp.site, *wp.path_ops]
    for node, nxt in itertools.pairwise(chain):
        if arch.consumers(node) != (nxt,):
            return None
    if set(arch.consumers(chain[-1])) != {c.node for c in wp.consumers}:
        return None
    scale, centre, flattened = 1.0, None, False
    for node in wp.path_ops:
        op = arch.op(node)
        if op in _SLOPE_AT_ZERO:
            scale *= _SLOPE_AT_ZERO[op]
        elif op == "batchnorm":
            scale /= math.sqrt(arch.spec(node)["eps"])
            centre = "features" if flattened else (centre or "units")
        elif op == "flatten" and site_op == "conv2d":
            flattened = True
        else:
            return None
    for c in wp.consumers:
        if arch.op(c.node) == "conv2d" and (site_op != "conv2d" or flattened):
            return None
        if arch.op(c.node) == "linear" and (site_op == "conv2d") != flattened:
            return None
        if site_op == "linear" and c.multiplicity != 1:
            return None
    return _ClosedForm(scale, centre)


def _site_input_and_consumer_grads(
    arch: Architecture, wp: WidenPath, batch: Batch
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The site's input and ``dL/dz`` of each consumer's output, one pass of the parent.

    Run with :func:`~morphsearch.arch.compile.evaluate` (no module is built) and with
    autograd only from the consumers' outputs on; none at all when the one consumer is
    the network's last layer (its output gradient is the loss's, in closed form).
    """
    consumers = {c.node for c in wp.consumers}
    last = len(consumers) == 1 and arch.consumers(wp.consumers[0].node) == (arch.output_node,)
    seen: dict[str, torch.Tensor] = {}

    def hook(node: str, inp: torch.Tensor, out: torch.Tensor) -> None:
        if node == wp.site:
            seen["h"] = inp
        elif node in consumers:
            if not last and not out.requires_grad:  # the first consumer: the graph starts
                out.requires_grad_()
            seen[node] = out

    inputs, targets = batch
    if last:
        with torch.no_grad(), fixed_dropout(arch):
            outputs = evaluate(arch, inputs, train=True, hook=hook)
        return seen["h"], [task_loss_grad(outputs, targets)]
    with gradients_on(), fixed_dropout(arch):  # the same masks as the general path
        inputs, targets = usable_batch(batch)
        loss = batch_loss(evaluate(arch, inputs, train=True, hook=hook), targets)
        grads = torch.autograd.grad(loss, [seen[c.node] for c in wp.consumers])
    return seen["h"].detach(), list(grads)


def _closed_form_gradmax_matrix(
    arch: Architecture, wp: WidenPath, batch: Batch, form: _ClosedForm
) -> torch.Tensor:
    """Eq. 11 in closed form from one backward pass of the parent itself (no auxiliary
    network): ``M = scale * sum_{b,p} G(b, p) P(b, p)^T`` with ``P`` the site's input
    rows (im2col patches for a conv site) and ``G`` the gradient a new unit's output
    would get, per outgoing weight: the consumer's output gradient, shifted by the
    consumer's kernel tap (conv consumer) or at one position (after a flatten), and
    centred as batchnorm does."""
    h, grads = _site_input_and_consumer_grads(arch, wp, batch)
    if arch.op(wp.site) == "linear":
        blocks = [(g - g.mean(dim=0) if form.centre else g).T @ h for g in grads]
    else:
        spec = arch.spec(wp.site)
        k, out_hw = spec["kernel_size"], arch.shape(wp.site)[1:]
        patches = F.unfold(h, k, padding=spec["padding"], stride=spec["stride"])  # [B, D, L]
        blocks = [
            _conv_consumer_block(arch, c.node, patches, out_hw, g, form.centre)
            if arch.op(c.node) == "conv2d"
            else _flat_consumer_block(patches, g, form.centre)
            for c, g in zip(wp.consumers, grads, strict=True)
        ]
    matrix = blocks[0] if len(blocks) == 1 else torch.cat(blocks)
    return matrix if form.scale == 1.0 else form.scale * matrix


def _conv_consumer_block(
    arch: Architecture, consumer: str, patches: torch.Tensor, out_hw: tuple[int, ...],
    g: torch.Tensor, centre: str | None,
) -> torch.Tensor:
    """Rows ``(o, ti, tj)`` for a conv consumer: ``M[(o, t)] = sum_{b,q} g[b, o, q]
    P[b, q * s + t - pad]`` (zero where that position is padding), one matmul per tap
    on a shifted view of the patches."""
    spec = arch.spec(consumer)
    kc, s, pad = spec["kernel_size"], spec["stride"], spec["padding"]
    b, d, _ = patches.shape
    hq, wq = g.shape[2:]
    # positions-major patches, zero-padded by the consumer's padding: [B, H+2p, W+2p, D]
    padded = F.pad(patches.transpose(1, 2).reshape(b, *out_hw, d), (0, 0, pad, pad, pad, pad))
    g_rows = g.permute(1, 0, 2, 3).reshape(g.shape[1], -1)  # [O, B*Q]
    if centre is not None:
        ones = F.pad(torch.ones(out_hw, dtype=g.dtype), (pad, pad, pad, pad))
        g_sum = g.sum(dim=0)  # [O, Hq, Wq]
        p_mean = patches.sum(dim=(0, 2)) / (b * out_hw[0] * out_hw[1])  # [D]
    taps = []
    for ti in range(kc):
        for tj in range(kc):
            rows, cols = slice(ti, ti + s * (hq - 1) + 1, s), slice(tj, tj + s * (wq - 1) + 1, s)
            block = g_rows @ padded[:, rows, cols].reshape(-1, d)  # [O, D]
            if centre is not None:
                # batchnorm: the gradient minus its mean over the batch and positions
                inside = (g_sum * ones[rows, cols]).sum(dim=(1, 2))  # [O]
                block = block - torch.outer(inside, p_mean)
            taps.append(block)
    return torch.stack(taps, dim=1).reshape(-1, d)


def _flat_consumer_block(patches: torch.Tensor, g: torch.Tensor, centre: str | None) -> torch.Tensor:
    """Rows ``(o, p)`` for a linear consumer after the flatten (channel ``c`` owns
    features ``c * L + p``): ``M[(o, p)] = sum_b g[b, o] P[b, p]``."""
    b, d, n = patches.shape
    if centre == "features":  # batchnorm after the flatten: per feature, over the batch
        g = g - g.mean(dim=0)
    block = (g.T @ patches.reshape(b, d * n)).reshape(-1, d, n).transpose(1, 2)  # [O, L, D]
    if centre == "units":  # batchnorm before it: per channel, over batch and positions
        block = block - (g.sum(dim=0) / (b * n))[:, None, None] * patches.sum(dim=(0, 2))
    return block.reshape(-1, d)


def gradmax_singular_values(arch: Architecture, site: str, batch: Batch) -> torch.Tensor:
    """Singular values of :func:`gradmax_matrix`, descending: a "where to grow" score.

    A new unit whose outgoing weights are the ``j``-th left singular vector scaled to
    norm ``c`` gets an incoming-weight gradient of norm ``c * s[j]``.
    """
    return torch.linalg.svdvals(gradmax_matrix(arch, site, batch))


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
        matrix = _gradmax_matrix(parent, wp, batch)
        _check_k(self.name, k, matrix.shape[0])
        c = _target_norm(self.name, scale, scale_mode, mean_outgoing_norm(parent, wp))
        u, _, _ = torch.linalg.svd(matrix, full_matrices=True)
        directions = _fixed_signs(u[:, :k].T)
        rows = site_rows_shape(parent, site)
        zeros = torch.zeros(k, *rows, dtype=parent.dtype)
        return widened(parent, wp, zeros, None,
                       _split_rows(directions * c, outgoing_shapes(parent, wp)))


def _fixed_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Flip each row so its largest-magnitude entry is positive (SVD signs are arbitrary)."""
    pivot = vectors.gather(1, vectors.abs().argmax(dim=1, keepdim=True))
    return vectors * pivot.sign()  # sign 0 only for an all-zero row, which stays zero
