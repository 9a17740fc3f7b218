"""The GradMax matrix (Evci et al., 2022, eq. 11): where new units' gradients are largest.

:func:`gradmax_matrix` is computed through an auxiliary widened network in general, or
in closed form from one backward pass of the parent where the path from the site to its
consumers allows it (see :func:`_closed_form`).
:class:`~morphsearch.morphisms.widen.GradMaxWiden` grows along its top singular vectors.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from morphsearch.arch import OPS, Architecture
from morphsearch.arch.compile import evaluate
from morphsearch.losses import task_loss_grad
from morphsearch.morphisms._registry import Batch
from morphsearch.morphisms._surgery import (
    WidenPath,
    as_2d,
    batch_loss,
    conv_geometry_2d,
    fixed_dropout,
    gradients_on,
    outgoing_shapes,
    site_rows_shape,
    usable_batch,
    widen_path,
    widened,
)

__all__ = ["gradmax_matrix", "gradmax_singular_values", "path_gradmax_matrix", "split_rows"]


def split_rows(vectors: torch.Tensor, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """``[k, d_out]`` flat outgoing vectors -> per consumer ``[k, *shape]``."""
    out, start = [], 0
    for shape in shapes:
        n = math.prod(shape)
        out.append(vectors[:, start : start + n].reshape(len(vectors), *shape))
        start += n
    return out


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
    return path_gradmax_matrix(arch, widen_path(arch, site), batch)


def path_gradmax_matrix(arch: Architecture, wp: WidenPath, batch: Batch) -> torch.Tensor:
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
                      split_rows(torch.eye(d_out, dtype=dtype), shapes))
        module = aux.to_module().train()
        weight = module.get_submodule(f"layers.{site}").weight
        assert isinstance(weight, torch.Tensor)
        inputs, targets = usable_batch(batch)
        loss = batch_loss(module(inputs.to(dtype)), targets)
        (grad,) = torch.autograd.grad(loss, weight)
    return grad[wp.width :].reshape(d_out, -1).detach()


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

    Closed forms: the site (linear, conv1d or conv2d) feeds a chain of activations with
    a known f'(0) (``OPS[op].slope_at_zero``), batchnorms and, after a conv site, at most
    one flatten; the end of the chain feeds only the consumers (units layers). Pooling, dropout or a branching path
    go through the auxiliary network.
    """
    conv_site = _is_conv(arch, wp.site)
    chain = [wp.site, *wp.path_ops]
    for node, nxt in itertools.pairwise(chain):
        if arch.consumers(node) != (nxt,):
            return None
    if set(arch.consumers(chain[-1])) != {c.node for c in wp.consumers}:
        return None
    scale, centre, flattened = 1.0, None, False
    for node in wp.path_ops:
        opdef = OPS[arch.op(node)]
        if opdef.slope_at_zero is not None:
            scale *= opdef.slope_at_zero
        elif opdef.batch_statistics:  # batchnorm: a new channel has batch variance 0
            scale /= math.sqrt(arch.spec(node)["eps"])
            centre = "features" if flattened else (centre or "units")
        elif opdef.name == "flatten" and conv_site:
            flattened = True
        else:
            return None
    for c in wp.consumers:
        if _is_conv(arch, c.node) and (not conv_site or flattened):
            return None
        if not _is_conv(arch, c.node) and conv_site != flattened:
            return None
        if not conv_site and c.multiplicity != 1:
            return None
    return _ClosedForm(scale, centre)


def _is_conv(arch: Architecture, node: str) -> bool:
    return bool(OPS[arch.op(node)].spatial_rank)


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
    if not _is_conv(arch, wp.site):
        blocks = [(g - g.mean(dim=0) if form.centre else g).T @ h for g in grads]
    else:
        k, s, p = conv_geometry_2d(arch, wp.site)
        out_hw = tuple(as_2d(torch.empty(1, *arch.shape(wp.site))).shape[2:])
        patches = F.unfold(as_2d(h), k, padding=p, stride=s)  # [B, D, positions]
        blocks = [
            _conv_consumer_block(arch, c.node, patches, out_hw, as_2d(g), form.centre)
            if _is_conv(arch, c.node)
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
    on a shifted view of the patches. ``g`` and the geometry are 2-d (see
    :func:`_conv_geometry`)."""
    (kh, kw), (sh, sw), (ph, pw) = conv_geometry_2d(arch, consumer)
    b, d, _ = patches.shape
    hq, wq = g.shape[2:]
    # positions-major patches, zero-padded by the consumer's padding: [B, H+2p, W+2p, D]
    padded = F.pad(patches.transpose(1, 2).reshape(b, *out_hw, d), (0, 0, pw, pw, ph, ph))
    g_rows = g.permute(1, 0, 2, 3).reshape(g.shape[1], -1)  # [O, B*Q]
    if centre is not None:
        ones = F.pad(torch.ones(out_hw, dtype=g.dtype), (pw, pw, ph, ph))
        g_sum = g.sum(dim=0)  # [O, Hq, Wq]
        p_mean = patches.sum(dim=(0, 2)) / (b * out_hw[0] * out_hw[1])  # [D]
    taps = []
    for ti in range(kh):
        for tj in range(kw):
            rows = slice(ti, ti + sh * (hq - 1) + 1, sh)
            cols = slice(tj, tj + sw * (wq - 1) + 1, sw)
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
