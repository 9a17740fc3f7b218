"""Splitting steepest descent (Liu, Wu, Wang, 2019): split neurons along the direction of
most negative curvature; optionally signed splitting (Wu et al.).

**Splitting matrix.** For neuron ``i`` of a site (a ``linear``, ``conv1d`` or ``conv2d``
layer) followed by an activation ``sigma``, with input ``x`` (augmented with a 1 for the
bias; for a conv, each im2col patch, one row per sample and output position) and
pre-activation ``y_i``, ``S_i = sum_r dL/dh_ri * sigma''(y_ri) * x_r x_r^T`` (``L`` the
batch-mean loss, ``h = sigma(y)``). Replacing the neuron by two copies with incoming
weights ``theta_i +- eps v`` and halved outgoing weights changes the loss by
``eps^2/2 * v^T S_i v + O(eps^3)``; the best ``v`` is the eigenvector of ``lambda_min``,
and a neuron with ``lambda_min < 0`` escapes its saddle by splitting.

**ReLU.** ``relu'' = 0`` almost everywhere, so the matrices use the splitting paper's
reference surrogate, the softplus of temperature ``beta``: ``sigma''(y) ~ beta s (1 - s)``,
``s = sigmoid(beta y)`` (``beta = 3`` by default). The surrogate only chooses directions:
the child is the same exact split (copies, halved outgoing weights) of the real ReLU
network, and with ``eps = 0`` computes the parent's function exactly.

**Batchnorm between the layer and its activation** (``y = BN(z)``, ``z`` the layer's
output). Eval mode (``mode="eval"``): BN is the per-channel affine map ``y = a z + b``,
``a = gamma / sqrt(running_var + eps)``, folded in: ``S_i = a_i^2 sum_r g sigma'' x x^T``.
Train mode (``mode="train"``, the default: the function the network trains): a copy's
batch statistics move with its weights, so with ``u_r = v.x_r``,
``y_r(eps) = gamma (z_r - mu + eps (u_r - mean u)) / sqrt(s^2 + 2 eps cov(z, u) +
eps^2 var(u)) + beta``, ``s^2 = var z + eps_bn``. Expanding to second order, with
``zhat = (z - mu)/s``, centred rows ``xt = x - mean x``, ``b = mean(zhat xt)``,
``C = mean(xt xt^T)``, ``g = dL/dh``::

    y'  = gamma/s   * (xt - zhat b) . v
    y'' = gamma/s^2 * (zhat (3 (b.v)^2 - v^T C v) - 2 (xt.v)(b.v))
    dL  = eps^2/2 * sum_r g_r (sigma''(y_r) y'_r^2 + sigma'(y_r) y''_r)

which is the quadratic form of ``S_i = sum_r c_r q_r q_r^T + A (3 b b^T - C) - B b^T -
b B^T`` with ``q_r = xt_r - zhat_r b``, ``c = g sigma'' gamma^2/s^2``, ``A = sum_r e_r
zhat_r``, ``B = sum_r e_r xt_r``, ``e = g sigma' gamma/s^2`` (``sigma'`` exact, also for
ReLU). Pooling or dropout *between* the layer and its activation is refused (not
derived); after the activation, dropout, flatten and pooling are fine (they act on each
copy's output linearly, or, maxpool, select one position: there the expansion holds for
steps below the gap between a window's two largest values).

**Signed splitting** (``signed=True``, Wu et al.). Two copies with outgoing fractions
``w1 + w2 = 1`` and steps ``eps d1``, ``eps d2`` with ``w1 d1 + w2 d2 = 0`` (no first-order
change) change the loss by ``eps^2/2 (w1 d1^T S d1 + w2 d2^T S d2)``. Plain splitting is
``w = (1/2, 1/2)``, ``d = (v, -v)``: ``eps^2/2 v^T S v``, a decrease only if
``lambda_min < 0``. A negative weight ``w1 = -c``, ``w2 = 1 + c`` with ``d1 = v``,
``d2 = c/(1+c) v`` (both steps at most ``eps``) gives ``-eps^2/2 * c/(1+c) * v^T S v``: a
decrease along the top eigenvector whenever ``lambda_max > 0``, even at a
splitting-stable point (``lambda_min >= 0``). With ``signed=True`` each neuron takes
whichever of the two predicts the lower loss (``min(lambda_min, -c/(1+c) lambda_max)``;
``c = signed_weight``), and neurons are ranked by that prediction.

``split.steepest`` changes the function by ``O(eps^2)`` on purpose (a descent step); with
``eps = 0`` it is an exact duplication, which is what :meth:`SteepestSplit.preserves`
reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from morphsearch.arch import Architecture, NodeSpec
from morphsearch.arch.compile import evaluate
from morphsearch.arch.ops import OPS
from morphsearch.errors import MorphismNotApplicable
from morphsearch.morphisms._registry import Batch, Morphism, register
from morphsearch.morphisms._split_linalg import (
    Curvature,
    Eigenpairs,
    extreme_eigenpairs,
    train_bn_curvature,
)
from morphsearch.morphisms._surgery import (
    WidenPath,
    as_2d,
    batch_loss,
    conv_geometry_2d,
    fixed_dropout,
    gradients_on,
    path_params_copy,
    set_unit_outgoing,
    unit_outgoing,
    usable_batch,
    widen_path,
    widened,
)

__all__ = ["SteepestSplit", "splitting_curvature", "splitting_eigenpairs",
           "splitting_eigenvalues", "splitting_matrices"]

Derivatives = Callable[[torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]


def _tanh(z: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.tanh(z)
    return 1.0 - t * t, -2.0 * t * (1.0 - t * t)


def _gelu(z: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    # gelu(z) = z Phi(z): gelu' = Phi + z phi, gelu'' = phi(z) (2 - z^2)
    phi = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0))) + z * phi, phi * (2.0 - z * z)


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _selu(z: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    neg = _SELU_SCALE * _SELU_ALPHA * torch.exp(torch.clamp(z, max=0.0))
    first = torch.where(z < 0, neg, torch.full_like(z, _SELU_SCALE))
    return first, torch.where(z < 0, neg, torch.zeros_like(z))


def _relu(z: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    # relu' exact; relu'' by the softplus_beta surrogate beta s (1 - s), s = sigmoid(beta z)
    s = torch.sigmoid(beta * z)
    return (z > 0).to(z.dtype), beta * s * (1.0 - s)


_DERIVATIVES: dict[str, Derivatives] = {
    "tanh": _tanh, "gelu": _gelu, "selu": _selu, "relu": _relu,
}
# per-unit ops allowed after the activation: linear in each copy's output, or a selection
_AFTER = frozenset({"dropout", "flatten", "maxpool", "avgpool", "global_avgpool"})


def _conv_rank(arch: Architecture, node: str) -> int | None:
    """0 for linear, 1 for conv1d, 2 for conv2d, None for other ops (the op table's)."""
    opdef = OPS[arch.op(node)]
    return opdef.spatial_rank if opdef.is_layer else None


@dataclass(frozen=True)
class _Site:
    wp: WidenPath
    bn: str | None
    act: str


def _split_site(arch: Architecture, site: str) -> _Site:
    """The site's layout, or why splitting does not apply (one line)."""
    wp = widen_path(arch, site)
    chain = [site]
    while len(chain) < 3 and len(arch.consumers(chain[-1])) == 1:
        nxt = arch.consumers(chain[-1])[0]
        chain.append(nxt)
        if arch.op(nxt) != "batchnorm":
            break
    bn = chain[1] if len(chain) > 2 and arch.op(chain[1]) == "batchnorm" else None
    act = chain[-1]
    op = arch.op(act) if len(chain) > 1 else "several consumers"
    if op in ("maxpool", "avgpool", "dropout", "global_avgpool"):
        raise MorphismNotApplicable(
            f"split.steepest does not split {site!r}: {op} {act!r} lies between the layer "
            "and its activation (splitting through it is not derived); grow with widen.*"
        )
    if op not in _DERIVATIVES:
        raise MorphismNotApplicable(
            f"split.steepest needs {site!r} -> [batchnorm] -> one relu, tanh, gelu or "
            f"selu activation, found {op}" + ("" if op == "several consumers" else f" {act!r}")
            + " (identity has no curvature); grow it with widen.* instead"
        )
    after = [node for node, _ in wp.path if node not in (bn, act)]
    bad = [n for n in after if arch.op(n) not in _AFTER]
    if bad:
        raise MorphismNotApplicable(
            f"split.steepest does not split {site!r}: after its activation {act!r} comes "
            f"{arch.op(bad[0])} {bad[0]!r}, not linear in each unit (only dropout, flatten "
            "and pooling are); grow it with widen.*"
        )
    return _Site(wp, bn, act)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``[N, M, *spatial] -> [N * positions, M]`` (a no-op for ``[N, M]``)."""
    return t if t.dim() == 2 else t.flatten(2).transpose(1, 2).reshape(-1, t.shape[1])


def _patches(arch: Architecture, site: str, x: torch.Tensor) -> torch.Tensor:
    """The site's input rows: ``x`` (linear) or its im2col patches ``[N * L, C * k...]``."""
    if not _conv_rank(arch, site):
        return x
    k, s, p = conv_geometry_2d(arch, site)  # conv1d as a 2-d conv of a (N, C, 1, L) view
    patches = F.unfold(as_2d(x), k, padding=p, stride=s)  # [N, D, L]
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


def _probe_arch(arch: Architecture, act: str) -> tuple[Architecture, str]:
    """``arch`` with a p=0 dropout right after ``act``: a hooked node that sees ``h``."""
    graph = arch.editable_graph()
    probe = f"{act}__split_probe"
    graph.add_node(probe, spec=NodeSpec("dropout", p=0.0))
    for nxt in arch.consumers(act):
        data = dict(graph.edges[act, nxt])
        graph.remove_edge(act, nxt)
        graph.add_edge(probe, nxt, **data)
    graph.add_edge(act, probe, port=0)
    return Architecture(graph, {n: dict(p) for n, p in arch.weights.items()}), probe


def splitting_curvature(arch: Architecture, site: str, batch: Batch, *, beta: float = 3.0,
                        mode: str = "train") -> Curvature:
    """The splitting matrices of ``site``'s neurons as an operator (see module doc).

    Raises:
        MorphismNotApplicable: not a splittable site, or a bad ``mode``/``beta``.
    """
    if mode not in ("train", "eval"):
        raise MorphismNotApplicable(f"split.steepest: mode={mode!r} must be 'train' or 'eval'")
    if not beta > 0:
        raise MorphismNotApplicable(f"split.steepest: beta={beta!r} must be > 0")
    info = _split_site(arch, site)
    direct = all(OPS[arch.op(n)].has_module for n in arch.consumers(info.act))
    run_arch, watch = (arch, arch.consumers(info.act)[0]) if direct else _probe_arch(
        arch, info.act)
    seen: dict[str, torch.Tensor] = {}

    def hook(node: str, inp: torch.Tensor, out: torch.Tensor) -> torch.Tensor | None:
        if node == site:  # the graph starts at z
            seen["x"], seen["z"] = inp, out.requires_grad_()
            return out
        if node == info.bn:
            seen["y"] = out
        if node == watch:
            seen["h"] = inp  # sigma(y): every consumer gets this one tensor
        return None

    with gradients_on(), fixed_dropout(arch):
        inputs, targets = usable_batch(batch)
        out = evaluate(run_arch, inputs, train=mode == "train", hook=hook)
        (grad,) = torch.autograd.grad(batch_loss(out, targets), seen["h"])
    z = seen["z"].detach()
    y = seen["y"].detach() if info.bn else z
    first, second = _DERIVATIVES[arch.op(info.act)](_rows(y), beta)
    g = _rows(grad)
    x = _patches(arch, site, seen["x"].detach())
    if "bias" in arch.weights[site]:
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    if info.bn is None:
        return Curvature(x, g * second)
    bn, spec = arch.weights[info.bn], arch.spec(info.bn)
    if mode == "eval":
        a = bn["weight"] / torch.sqrt(bn["running_var"] + spec["eps"])
        return Curvature(x, g * second * a * a)
    return train_bn_curvature(x, _rows(z), g, first, second, bn["weight"], spec["eps"])


def splitting_matrices(arch: Architecture, site: str, batch: Batch, *, beta: float = 3.0,
                       mode: str = "train") -> torch.Tensor:
    """The splitting matrices ``S_i`` of every neuron of ``site``: ``[M, d, d]``
    (``d``: incoming weights, then the bias when there is one).

    Raises:
        MorphismNotApplicable: not a splittable site (the message says why).
    """
    return splitting_curvature(arch, site, batch, beta=beta, mode=mode).matrices()


def splitting_eigenpairs(arch: Architecture, site: str, batch: Batch, *,
                         method: str = "auto", iters: int = 24, seed: int = 0,
                         beta: float = 3.0, mode: str = "train",
                         ends: str = "both") -> Eigenpairs:
    """Smallest and largest eigenpair of each neuron's splitting matrix.

    ``method``: ``"exact"`` (``eigh`` of each materialised matrix), ``"fast"`` (Lanczos on
    matrix-free products, at most ``iters`` steps) or ``"auto"`` (fast for large layers).
    ``ends="min"``: the smallest only, which is all a plain split reads (the fast method
    then skips the largest; see :func:`~morphsearch.morphisms._split_linalg.extreme_eigenpairs`).

    Raises:
        MorphismNotApplicable: not a splittable site, an unknown method or ``ends``, or
            ``iters`` below 1.
    """
    curv = splitting_curvature(arch, site, batch, beta=beta, mode=mode)
    try:
        return extreme_eigenpairs(curv, method=method, iters=iters, seed=seed, ends=ends)
    except ValueError as exc:
        raise MorphismNotApplicable(f"split.steepest: {exc}") from None


def splitting_eigenvalues(arch: Architecture, site: str, batch: Batch, *,
                          method: str = "auto", iters: int = 24, seed: int = 0,
                          beta: float = 3.0, mode: str = "train",
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lambda_min [M], eigenvector [M, d])``: a "where to split" score (see
    :func:`splitting_eigenpairs`)."""
    pairs = splitting_eigenpairs(arch, site, batch, method=method, iters=iters, seed=seed,
                                 beta=beta, mode=mode, ends="min")
    return pairs.min_values, pairs.min_vectors


def predicted_decrease(pairs: Eigenpairs, *, signed: bool,
                       signed_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per neuron, the predicted loss change over ``eps^2/2`` of its best split, and
    whether that split is the signed one (see module doc)."""
    plain = pairs.min_values
    if not signed:
        return plain, torch.zeros_like(plain, dtype=torch.bool)
    if pairs.max_values is None:
        raise ValueError("a signed split reads the largest eigenvalues: solve ends='both'")
    neg = -signed_weight / (1.0 + signed_weight) * pairs.max_values
    use = neg < plain
    return torch.where(use, neg, plain), use


@register
class SteepestSplit(Morphism):
    """Split the ``k`` neurons whose best split predicts the lowest loss (module doc).

    Each chosen neuron keeps its index with incoming weights ``theta + eps v`` and gets a
    copy appended at the end with ``theta - eps v``; both carry half the outgoing weights
    (batchnorm parameters between the layer and its activation are copied). A signed
    split instead moves the copy by ``eps c/(1+c) v`` and weights the two by ``-c`` and
    ``1 + c``. Neurons are split even when no split predicts a decrease; check
    :func:`splitting_eigenpairs` first to avoid it.

    Params:
        k: how many neurons to split.
        eps: step along ``v`` (unit norm), in weight units; 0 duplicates exactly.
        method: ``"auto"``, ``"exact"`` or ``"fast"`` (see :func:`splitting_eigenpairs`).
        iters: most Lanczos steps of the fast method.
        beta: temperature of the softplus surrogate for ReLU's second derivative.
        mode: batchnorm statistics the matrices are derived for: ``"train"`` or ``"eval"``.
        signed: allow negative-weight (signed) splits.
        signed_weight: ``c`` of a signed split (outgoing weights ``-c`` and ``1 + c``).
    """

    name = "split.steepest"
    preserves_function = False
    needs_batch = True
    description = "splitting steepest descent: split neurons along min-eigenvector"

    def sites(self, arch: Architecture) -> list[str]:
        return [n for n in arch.nodes if _conv_rank(arch, n) is not None
                and self.why_not(arch, n) is None]

    def why_not(self, arch: Architecture, site: str) -> str | None:
        try:
            _split_site(arch, site)
        except MorphismNotApplicable as exc:
            return str(exc)
        return None

    def accepts(self, arch: Architecture, site: str) -> bool:
        return _conv_rank(arch, site) is not None and self.why_not(arch, site) is None

    def plan(self, parent: Architecture, site: str, **params: Any) -> Architecture:
        """``k`` more units at ``site`` (each split appends one copy), zero weights: the
        child's structure without a batch."""
        wp = _split_site(parent, site).wp
        k = params.get("k", 1)
        if not isinstance(k, int) or not 1 <= k <= wp.width:
            raise MorphismNotApplicable(f"{self.name}: k={k!r} must be an int in [1, {wp.width}]")
        zeros = torch.zeros(k, *parent.weights[site]["weight"].shape[1:], dtype=parent.dtype)
        return widened(parent, wp, zeros, None,
                       [torch.zeros(k, *t.shape, dtype=parent.dtype)
                        for t in unit_outgoing(parent, wp, 0)])

    def preserves(self, params: Mapping[str, Any]) -> bool:
        return params.get("eps", 0.01) == 0

    def transform(  # type: ignore[override]  # params are keyword-only by contract
        self, parent: Architecture, site: str, *, batch: Batch | None,
        generator: torch.Generator, k: int = 1, eps: float = 0.01, method: str = "auto",
        iters: int = 24, beta: float = 3.0, mode: str = "train", signed: bool = False,
        signed_weight: float = 1.0,
    ) -> Architecture:
        if batch is None:
            raise MorphismNotApplicable(f"{self.name} needs a batch=(inputs, targets)")
        wp = _split_site(parent, site).wp
        if not isinstance(k, int) or not 1 <= k <= wp.width:
            raise MorphismNotApplicable(f"{self.name}: k={k!r} must be an int in [1, {wp.width}]")
        if not signed_weight > 0:
            raise MorphismNotApplicable(f"{self.name}: signed_weight={signed_weight!r} must "
                                        "be > 0")
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        pairs = splitting_eigenpairs(parent, site, batch, method=method, iters=iters,
                                     seed=seed, beta=beta, mode=mode,
                                     ends="both" if signed else "min")
        value, use_signed = predicted_decrease(pairs, signed=signed,
                                               signed_weight=signed_weight)
        chosen = [int(i) for i in torch.argsort(value, stable=True)[:k]]
        # only the chosen neurons' vectors are lifted to the layer's inputs
        lo = pairs.vectors("min", chosen)
        hi = pairs.vectors("max", chosen) if signed else lo
        plans = []
        c = signed_weight
        for row, i in enumerate(chosen):
            if use_signed[i]:
                v = eps * hi[row]
                plans.append((v, c / (1 + c) * v, -c, 1 + c))
            else:
                v = eps * lo[row]
                plans.append((v, -v, 0.5, 0.5))
        return _split(parent, wp, chosen, plans)


Plan = tuple[torch.Tensor, torch.Tensor, float, float]
"""Per split neuron: (its step, its copy's step, its outgoing fraction, the copy's)."""


def _split(parent: Architecture, wp: WidenPath, chosen: list[int],
           plans: list[Plan]) -> Architecture:
    """Move each chosen neuron and append its copy as ``plans`` say.

    A step is one unit's incoming weights flattened (a conv filter as ``C*k...``), then
    the bias if the site has one.
    """
    dtype = parent.dtype
    site_w = parent.weights[wp.site]
    n_in = site_w["weight"][0].numel()
    idx = torch.tensor(chosen, dtype=torch.long)
    own = torch.stack([p[0] for p in plans]).to(dtype)
    other = torch.stack([p[1] for p in plans]).to(dtype)
    rows = site_w["weight"].reshape(len(site_w["weight"]), -1)[idx]
    copy_w = (rows + other[:, :n_in]).reshape(len(chosen), *site_w["weight"].shape[1:])
    copy_b = site_w["bias"][idx] + other[:, n_in] if "bias" in site_w else None
    base = [unit_outgoing(parent, wp, u) for u in chosen]
    outgoing = [torch.stack([out[j] * plan[3] for out, plan in zip(base, plans, strict=True)])
                for j in range(len(wp.consumers))]
    child = widened(parent, wp, copy_w, copy_b, outgoing, path_params_copy(parent, wp, chosen))
    # The site's and consumers' tensors of the child are new (torch.cat in widened) and
    # nobody has seen the child yet: move the kept neurons and scale their outgoing
    # weights in place instead of validating a second copy of the network.
    new = child.weights[wp.site]
    new["weight"].reshape(len(new["weight"]), -1)[idx] += own[:, :n_in]
    if "bias" in new:
        new["bias"][idx] += own[:, n_in]
    for unit, out, plan in zip(chosen, base, plans, strict=True):
        for cons, w in zip(wp.consumers, out, strict=True):
            set_unit_outgoing(child.weights[cons.node]["weight"], cons, unit, w * plan[2])
    return child
