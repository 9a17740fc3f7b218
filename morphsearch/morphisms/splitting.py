"""Splitting steepest descent (Liu, Wu, Wang, 2019): split neurons along the direction of
most negative curvature.

For neuron ``i`` of a ``linear`` site followed by an activation ``sigma``, with input
``x`` (augmented with a 1 for the bias) and pre-activation ``z_i``, the splitting matrix
is ``S_i = E[dL/dh_i * sigma''(z_i) * x x^T]`` (``E`` over the batch, ``L`` the batch-mean
loss). Replacing the neuron by two copies with incoming weights ``theta_i +- eps v`` and
halved outgoing weights changes each copy pair's output by ``eps^2/2 sigma''(z)(v.x)^2``,
so the loss changes by ``eps^2/2 * v^T S_i v + O(eps^3)``; the best ``v`` is the
eigenvector of the smallest eigenvalue ``lambda_min``, and a neuron with
``lambda_min < 0`` escapes its saddle by splitting.

A ``conv2d`` site's neurons are its output channels: ``x`` is each im2col patch (one per
batch sample and output position) and the expectation sums over positions as well, since
a channel's two copies differ at every position by the same filter step ``+-eps v``.

What ``preserves_function`` means here: the split changes the function by
``O(eps^2)`` on purpose (it is a descent step), so ``split.steepest`` does not claim to
preserve it; with ``eps=0`` it is an exact duplication. Sites: a ``linear`` or
``conv2d`` layer whose output goes through exactly one ``tanh``, ``gelu`` or ``selu``
(and, after a conv, at most a ``flatten``) into other ``linear``/``conv2d`` layers; ReLU
(and identity) sites are refused, since ``sigma'' = 0`` makes every splitting matrix
zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from morphsearch.arch import Architecture
from morphsearch.arch.compile import evaluate
from morphsearch.errors import MorphismNotApplicable
from morphsearch.morphisms._registry import Batch, Morphism, register
from morphsearch.morphisms._surgery import (
    WidenPath,
    as_2d,
    batch_loss,
    conv_geometry_2d,
    fixed_dropout,
    gradients_on,
    set_unit_outgoing,
    unit_outgoing,
    usable_batch,
    widen_path,
    widened,
)

__all__ = ["SteepestSplit", "splitting_eigenvalues", "splitting_matrices"]


def _tanh2(z: torch.Tensor) -> torch.Tensor:
    t = torch.tanh(z)
    return -2.0 * t * (1.0 - t * t)


def _gelu2(z: torch.Tensor) -> torch.Tensor:
    # gelu(z) = z Phi(z): gelu'' = phi(z) (2 - z^2)
    phi = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return phi * (2.0 - z * z)


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _selu2(z: torch.Tensor) -> torch.Tensor:
    return torch.where(z < 0, _SELU_SCALE * _SELU_ALPHA * torch.exp(z), torch.zeros_like(z))


_SECOND_DERIVATIVE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": _tanh2,
    "gelu": _gelu2,
    "selu": _selu2,
}


def _split_path(arch: Architecture, site: str) -> tuple[WidenPath, str]:
    """The site's widen path and its activation, or why splitting does not apply."""
    wp = widen_path(arch, site)
    ops = [arch.op(node) for node, _ in wp.path]
    smooth = (*_SECOND_DERIVATIVE, "relu", "identity")
    if not ops or ops[0] not in smooth or ops[1:] not in ([], ["flatten"]):
        raise MorphismNotApplicable(
            f"split.steepest needs {site!r} -> one activation [-> flatten] -> linear or "
            "conv2d layers"
        )
    act_node = wp.path[0][0]
    act = arch.op(act_node)
    if act not in _SECOND_DERIVATIVE:
        raise MorphismNotApplicable(
            f"split.steepest cannot split {site!r}: its activation {act_node!r} is {act}, "
            "whose second derivative is 0, so every splitting matrix is 0; "
            "use tanh, gelu or selu there, or grow with widen.gradmax"
        )
    return wp, act


def _curvature_weights(
    arch: Architecture, wp: WidenPath, act: str, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, c)``: augmented inputs ``[R, d]`` and ``c = dL/dh * sigma''(z)`` ``[R, M]``,
    one row per sample (linear) or per sample and output position (conv2d, ``x`` the
    im2col patch), ``M`` the site's units and ``d`` a unit's incoming weights (+1 for
    the bias, last)."""
    consumer = wp.consumers[0].node
    seen: dict[str, torch.Tensor] = {}

    def hook(node: str, inp: torch.Tensor, out: torch.Tensor) -> torch.Tensor | None:
        if node == wp.site:  # the graph starts at z: h = sigma(z) and on
            seen["x"], seen["z"] = inp, out.requires_grad_()
            return out
        if node == consumer:
            seen["h"] = inp  # sigma(z), flattened after a flatten: one tensor, all consumers
        return None

    with gradients_on(), fixed_dropout(arch):
        inputs, targets = usable_batch(batch)
        loss = batch_loss(evaluate(arch, inputs, train=True, hook=hook), targets)
        (grad_h,) = torch.autograd.grad(loss, seen["h"])
    x, z = seen["x"], seen["z"].detach()
    if x.dim() > 2:  # a conv site (conv1d as a conv2d of height 1)
        k, s, p = conv_geometry_2d(arch, wp.site)
        patches = F.unfold(as_2d(x), k, padding=p, stride=s)  # [N, D, L]
        x = patches.transpose(1, 2).reshape(-1, patches.shape[1])  # [N*L, D]
        c = grad_h.reshape(z.shape) * _SECOND_DERIVATIVE[act](z)  # [N, M, *spatial]
        c = c.flatten(2).transpose(1, 2).reshape(-1, z.shape[1])  # [N*L, M]
    else:
        c = grad_h * _SECOND_DERIVATIVE[act](z)
    if "bias" in arch.weights[wp.site]:
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    return x, c


def splitting_matrices(arch: Architecture, site: str, batch: Batch) -> torch.Tensor:
    """The splitting matrices ``S_i`` of every neuron of ``site``: ``[M, d, d]``.

    ``d`` is the input width plus one for the bias (last coordinate) when there is one.

    Raises:
        MorphismNotApplicable: not a splittable site (e.g. ReLU: says why).
    """
    wp, act = _split_path(arch, site)
    x, c = _curvature_weights(arch, wp, act, batch)
    return torch.einsum("nm,ni,nj->mij", c, x, x)


def splitting_eigenvalues(
    arch: Architecture,
    site: str,
    batch: Batch,
    *,
    method: str = "exact",
    iters: int = 20,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest eigenpair of each neuron's splitting matrix: a "where to split" score.

    Args:
        arch: the network; unchanged.
        site: a ``split.steepest`` site.
        batch: ``(inputs, targets)``.
        method: ``"exact"`` (materialise each ``S_i``, ``eigh``) or ``"fast"`` (Lanczos
            with ``iters`` steps on matrix-free products ``S_i v``, for wide inputs).
        iters: Lanczos steps of the fast method (exact once ``iters >= d``).
        seed: start vectors of the fast method.

    Returns:
        ``(eigvals [M], eigvecs [M, d])``; unit-norm eigenvectors, bias last.

    Raises:
        MorphismNotApplicable: not a splittable site, or an unknown method.
    """
    wp, act = _split_path(arch, site)
    x, c = _curvature_weights(arch, wp, act, batch)
    if method == "exact":
        vals, vecs = torch.linalg.eigh(torch.einsum("nm,ni,nj->mij", c, x, x))
        return vals[:, 0], vecs[:, :, 0]
    if method == "fast":

        def matvec(v: torch.Tensor) -> torch.Tensor:
            # S_m v_m = sum_n c[n, m] (x_n . v_m) x_n, for all neurons m at once
            return (c * (x @ v.T)).T @ x

        generator = torch.Generator().manual_seed(seed)
        vecs = _lanczos_smallest(matvec, c.shape[1], x.shape[1], iters, generator, x.dtype)
        return (vecs * matvec(vecs)).sum(dim=1), vecs
    raise MorphismNotApplicable(f"split.steepest: method={method!r} must be 'exact' or 'fast'")


def _lanczos_smallest(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    batch: int,
    dim: int,
    iters: int,
    generator: torch.Generator,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Batched Lanczos with full reorthogonalisation: ``batch`` smallest eigenvectors."""
    steps = min(iters, dim)
    basis = torch.zeros(batch, steps, dim, dtype=dtype)
    alpha = torch.zeros(batch, steps, dtype=dtype)
    beta = torch.zeros(batch, steps, dtype=dtype)
    q = _unit(torch.randn(batch, dim, generator=generator, dtype=dtype))
    for j in range(steps):
        basis[:, j] = q
        w = matvec(q)
        alpha[:, j] = (w * q).sum(dim=1)
        w = _orthogonalised(w, basis[:, : j + 1])
        beta[:, j] = w.norm(dim=1)
        # An invariant subspace was found (beta ~ 0): continue from a fresh direction.
        fresh = _orthogonalised(
            torch.randn(batch, dim, generator=generator, dtype=dtype), basis[:, : j + 1]
        )
        stalled = beta[:, j] <= 1e-12 * alpha[:, : j + 1].abs().amax(dim=1).clamp_min(1e-300)
        beta[:, j] = torch.where(stalled, torch.zeros_like(beta[:, j]), beta[:, j])
        q = _unit(torch.where(stalled[:, None], fresh, w))
    off = beta[:, : steps - 1]
    tri = torch.diag_embed(alpha) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    _, ritz = torch.linalg.eigh(tri)
    return _unit(torch.einsum("bj,bjd->bd", ritz[:, :, 0], basis))


def _orthogonalised(w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    for _ in range(2):  # twice is enough (Kahan-Parlett)
        w = w - torch.einsum("bj,bjd->bd", torch.einsum("bjd,bd->bj", basis, w), basis)
    return w


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)


@register
class SteepestSplit(Morphism):
    """Split the ``k`` neurons with the most negative ``lambda_min`` (see module doc).

    Each chosen neuron keeps its index with incoming weights ``theta + eps v`` and gets
    a copy appended at the end with ``theta - eps v``; both carry half the outgoing
    weights. Neurons are split even when ``lambda_min >= 0`` (then the loss goes up
    by ``eps^2/2 lambda_min``); check :func:`splitting_eigenvalues` first to avoid it.

    Params:
        k: how many neurons to split.
        eps: step along ``v`` (unit norm), in weight units; 0 duplicates exactly.
        method: ``"exact"`` or ``"fast"`` (see :func:`splitting_eigenvalues`).
        iters: Lanczos steps of the fast method.
    """

    name = "split.steepest"
    preserves_function = False
    needs_batch = True
    description = "splitting steepest descent: split neurons along min-eigenvector"

    def sites(self, arch: Architecture) -> list[str]:
        out = []
        for node in arch.nodes:
            try:
                _split_path(arch, node)
            except MorphismNotApplicable:
                continue
            out.append(node)
        return out

    def why_not(self, arch: Architecture, site: str) -> str | None:
        try:
            _split_path(arch, site)
        except MorphismNotApplicable as exc:
            return str(exc)
        return None

    def transform(  # type: ignore[override]  # params are keyword-only by contract
        self,
        parent: Architecture,
        site: str,
        *,
        batch: Batch | None,
        generator: torch.Generator,
        k: int = 1,
        eps: float = 0.01,
        method: str = "exact",
        iters: int = 20,
    ) -> Architecture:
        if batch is None:
            raise MorphismNotApplicable(f"{self.name} needs a batch=(inputs, targets)")
        wp, _ = _split_path(parent, site)
        if not isinstance(k, int) or not 1 <= k <= wp.width:
            raise MorphismNotApplicable(f"{self.name}: k={k!r} must be an int in [1, {wp.width}]")
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        vals, vecs = splitting_eigenvalues(parent, site, batch, method=method, iters=iters,
                                           seed=seed)
        chosen = [int(i) for i in torch.argsort(vals, stable=True)[:k]]
        return _split(parent, wp, chosen, vecs[chosen] * eps)


def _split(
    parent: Architecture, wp: WidenPath, chosen: list[int], steps: torch.Tensor
) -> Architecture:
    """Move each chosen neuron by ``+step``, append its copy at ``-step``, halve outgoing.

    ``steps``: ``[k, d]``, one unit's incoming weights flattened (a conv filter as
    ``C*kh*kw``), then the bias if the site has one.
    """
    weights = parent.weights_copy()
    site_w = weights[wp.site]
    rows = site_w["weight"].reshape(len(site_w["weight"]), -1)  # a view: edits go through
    n_in = rows.shape[1]
    idx = torch.tensor(chosen, dtype=torch.long)
    steps = steps.to(parent.dtype)
    copy_w = (rows[idx] - steps[:, :n_in]).reshape(len(chosen), *site_w["weight"].shape[1:])
    rows[idx] += steps[:, :n_in]
    copy_b = None
    if "bias" in site_w:
        copy_b = site_w["bias"][idx] - steps[:, n_in]
        site_w["bias"][idx] += steps[:, n_in]
    halves = [[w / 2 for w in unit_outgoing(parent, wp, u)] for u in chosen]
    for unit, half in zip(chosen, halves, strict=True):
        for c, h in zip(wp.consumers, half, strict=True):
            set_unit_outgoing(weights[c.node]["weight"], c, unit, h)
    outgoing = [torch.stack([h[j] for h in halves]) for j in range(len(wp.consumers))]
    return widened(parent.with_weights(weights), wp, copy_w, copy_b, outgoing)
