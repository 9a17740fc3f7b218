"""Deepening morphisms: insert new layers that start out computing the identity.

Both operators insert after a *site*: a hidden activation node (``relu``, ``tanh``,
``gelu``, ``selu`` or ``identity``: ``OPS[op].activation``) whose output is a vector, a
signal or an image. Activations are where a layer's output is "finished" (after its
batch norm, before dropout and pooling), so new depth sits between two existing layers;
the network's input and output are never sites. Everything that consumed the site's output consumes the new block's output
instead, on the same input port.

``deepen.identity`` inserts ``layer -> [batchnorm] -> [activation]`` where ``layer`` is a
``linear`` (vector site), a ``conv1d`` (signal site) or a ``conv2d`` (image site; convs
have an odd ``kernel_size``, stride 1, padding ``kernel_size // 2`` so the shape is kept)
initialised to the identity (weight ``I`` or a centre-tap ``I``, bias 0). Rule for the
activation: it is repeated only when it is idempotent on the site's output,
``a(a(z)) = a(z)`` (``OPS[op].idempotent``). That holds for ``relu`` (the
IR's ReLU is ``clamp(min=0)``: the site's output is already >= 0 and is passed through
unchanged); it fails for ``tanh``, ``gelu`` and ``selu``, so there the new layer is
inserted without an activation. It is then a linear factorisation of the next layer
(the ``B = CD`` split of the blog post "Saddles, Splitting, and Reparameterization:
Dynamically Growing Neural Networks", unsigned, 2026): exact, and it changes the
training dynamics.

Batch norm: ``batchnorm=True`` adds a batch norm initialised to the identity *in eval
mode* (weight 1, bias 0, running mean 0, running variance ``1 - eps``). In train mode a
batch norm normalises with the batch's statistics and cannot be the identity, so the
function is then preserved in eval mode only; the default (``False``) is exact in both.

``deepen.skip`` inserts a residual branch ``site -> branch -> add(site, branch)``: with
``layers=1`` the branch is one zero-initialised layer; with ``layers=2`` it is a randomly
initialised layer (PyTorch's default scheme, drawn from the morphism's generator), an
optional batch norm, the site's activation (``relu`` for an ``identity`` site) and a
zero-initialised layer. The zero last layer makes the branch output exactly 0 in train
and eval mode, so the new depth starts as a fallback path around an identity, and its
last layer receives a gradient at once. Near-identity insertions escape plateaus faster
than near-zero bottlenecks: "A Theory of Saddle Escape in Deep Nonlinear Networks" (a
blog write-up of an arXiv paper; its copy names neither author nor year).

Both are deterministic under the seed and exact: the identity layer multiplies by 1 and
adds exact zeros, and a zero layer outputs exact zeros.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import networkx as nx
import torch

from morphsearch.arch import OPS, Architecture, NodeSpec
from morphsearch.arch.ops import layer_op_for
from morphsearch.errors import MorphismNotApplicable
from morphsearch.morphisms._registry import Batch, Morphism, register

__all__ = ["DeepenIdentity", "DeepenSkip", "deepen_sites"]

Params = dict[str, torch.Tensor]
Layer = tuple[str, NodeSpec, Params]  # (name suffix, spec, weights)


def deepen_sites(arch: Architecture) -> list[str]:
    """Hidden activation nodes with a vector, signal or image output, in topological
    order."""
    return [
        n for n in arch.nodes
        if OPS[arch.op(n)].activation and len(arch.shape(n)) in (1, 2, 3)
    ]


# ------------------------------------------------------------------ layers


def _check_kernel(kernel_size: int) -> None:
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise MorphismNotApplicable(
            f"kernel_size must be a positive odd int (1, 3, 5 ...) so the new conv keeps "
            f"its input's size, got {kernel_size!r}"
        )


def _layer_spec(shape: Sequence[int], kernel_size: int) -> NodeSpec:
    """The units layer keeping ``shape``: linear, or a stride-1 conv padded to keep the
    size (one spec for conv1d and conv2d: an int kernel means every dimension)."""
    op = layer_op_for(shape)
    attrs: dict[str, int] = {str(OPS[op].width_attr): shape[0]}
    if len(shape) > 1:
        attrs.update(kernel_size=kernel_size, padding=kernel_size // 2)
    return NodeSpec(op, attrs)


def _kernel(shape: Sequence[int], kernel_size: int) -> tuple[int, ...]:
    """A square (cubic ...) kernel over the spatial dims of ``shape``; () for a vector."""
    return (kernel_size,) * (len(shape) - 1)


def _identity_weights(shape: Sequence[int], kernel_size: int, dtype: torch.dtype) -> Params:
    c, kernel = shape[0], _kernel(shape, kernel_size)
    weight = torch.zeros(c, c, *kernel, dtype=dtype)
    centre: tuple[slice | int, ...] = (slice(None), slice(None), *(k // 2 for k in kernel))
    weight[centre] = torch.eye(c, dtype=dtype)
    return {"weight": weight, "bias": torch.zeros(c, dtype=dtype)}


def _zero_weights(shape: Sequence[int], kernel_size: int, dtype: torch.dtype) -> Params:
    return {k: torch.zeros_like(t) for k, t in _identity_weights(shape, kernel_size, dtype).items()}


def _random_weights(
    shape: Sequence[int], kernel_size: int, dtype: torch.dtype, generator: torch.Generator
) -> Params:
    """PyTorch's default init (uniform in +-1/sqrt(fan_in)), drawn from ``generator``."""
    c = shape[0]
    wshape = (c, c, *_kernel(shape, kernel_size))
    bound = 1.0 / math.sqrt(math.prod(wshape[1:]))

    def draw(*size: int) -> torch.Tensor:
        u = torch.rand(size, generator=generator, dtype=torch.float64)
        return ((2 * u - 1) * bound).to(dtype)

    return {"weight": draw(*wshape), "bias": draw(c)}


def _unit_variance(eps: float, dtype: torch.dtype) -> torch.Tensor:
    """``1 - eps`` nudged so that ``var + eps`` rounds to exactly 1 in ``dtype``."""
    one = torch.tensor(1.0, dtype=dtype)
    var = one - eps
    for _ in range(8):
        total = var + eps
        if total == one:
            break
        var = torch.nextafter(var, var + (one - total))
    return var


def _batchnorm(channels: int, dtype: torch.dtype, *, eval_identity: bool) -> Layer:
    spec = NodeSpec("batchnorm")
    var = _unit_variance(spec["eps"], dtype) if eval_identity else torch.tensor(1.0, dtype=dtype)
    params = {
        "weight": torch.ones(channels, dtype=dtype),
        "bias": torch.zeros(channels, dtype=dtype),
        "running_mean": torch.zeros(channels, dtype=dtype),
        "running_var": var.expand(channels).clone(),
        "num_batches_tracked": torch.zeros((), dtype=torch.int64),
    }
    return "bn", spec, params


def _kind(shape: Sequence[int]) -> str:
    return "fc" if len(shape) == 1 else "conv"


# ----------------------------------------------------------------- surgery


def _fresh_prefix(arch: Architecture, stem: str) -> str:
    """``deep1``, ``deep2`` ...: the first one no node name starts with."""
    i = 1
    while any(n.startswith(f"{stem}{i}_") for n in arch.nodes):
        i += 1
    return f"{stem}{i}"


def _add_chain(
    graph: nx.DiGraph, weights: dict[str, Params], start: str, prefix: str, chain: list[Layer]
) -> str:
    """Append ``chain`` after ``start`` (each on port 0); returns the last node's name."""
    prev = start
    for suffix, spec, params in chain:
        name = f"{prefix}_{suffix}"
        graph.add_node(name, spec=spec)
        graph.add_edge(prev, name, port=0)
        if params:
            weights[name] = params
        prev = name
    return prev


def _rewire(graph: nx.DiGraph, parent: Architecture, site: str, new_source: str) -> None:
    """Make every consumer of ``site`` in ``parent`` read ``new_source`` on the same port."""
    for consumer in parent.consumers(site):
        ordered = parent.inputs(consumer)
        graph.remove_edge(site, consumer)
        graph.add_edge(new_source, consumer)
        # Ports made explicit on every input edge: mixing given and implicit ports
        # would let the new edge change the consumer's input order.
        for port, src in enumerate(ordered):
            graph.edges[new_source if src == site else src, consumer]["port"] = port


def _checked_site(parent: Architecture, site: str) -> tuple[int, ...]:
    if site not in deepen_sites(parent):
        raise MorphismNotApplicable(
            f"cannot deepen at {site!r}: sites are hidden activation nodes; "
            f"valid sites: {', '.join(deepen_sites(parent)) or 'none'}"
        )
    return parent.shape(site)


# --------------------------------------------------------------- operators


class _Deepening(Morphism):
    """Shared by the deepening morphisms: the sites are hidden activation nodes."""

    def sites(self, arch: Architecture) -> list[str]:
        return deepen_sites(arch)

    def why_not(self, arch: Architecture, site: str) -> str | None:
        if site in deepen_sites(arch):
            return None
        return f"{site!r} is {arch.op(site)}; new depth goes after a hidden activation node"


@register
class DeepenIdentity(_Deepening):
    """Insert an identity-initialised layer (and the site's activation if idempotent)."""

    name = "deepen.identity"
    preserves_function = True
    needs_batch = False
    description = (
        "insert a linear/conv layer initialised to the identity after a hidden activation "
        "(followed by the activation when it is idempotent, e.g. relu)"
    )

    def preserves(self, params: Mapping[str, Any]) -> bool:
        # a new batchnorm is the identity in eval mode only: in train mode it normalises
        # by the batch's statistics
        return not params.get("batchnorm", False)

    def transform(  # type: ignore[override]  # params are keyword-only by contract
        self,
        parent: Architecture,
        site: str,
        *,
        batch: Batch | None,
        generator: torch.Generator,
        kernel_size: int = 3,
        batchnorm: bool = False,
    ) -> Architecture:
        """Insert ``layer -> [batchnorm] -> [activation]`` after ``site``.

        Args:
            parent: the architecture; not modified.
            site: a hidden activation node (see :func:`deepen_sites`).
            batch: unused.
            generator: unused (the insertion is deterministic).
            kernel_size: odd kernel of the new conv at signal and image sites.
            batchnorm: add a batch norm that is the identity in eval mode only.

        Returns:
            The deeper child, equal to the parent as a function.

        Raises:
            MorphismNotApplicable: bad site or even kernel size.
        """
        shape = _checked_site(parent, site)
        _check_kernel(kernel_size)
        dtype, kind = parent.dtype, _kind(shape)
        chain: list[Layer] = [
            (kind, _layer_spec(shape, kernel_size), _identity_weights(shape, kernel_size, dtype))
        ]
        if batchnorm:
            chain.append(_batchnorm(shape[0], dtype, eval_identity=True))
        if OPS[parent.op(site)].idempotent:
            chain.append((parent.op(site), NodeSpec(parent.op(site)), {}))
        return _insert(parent, site, chain, "deep", join=False)


@register
class DeepenSkip(_Deepening):
    """Insert a residual branch whose last layer is zero, joined to the site by ``add``."""

    name = "deepen.skip"
    preserves_function = True
    needs_batch = False
    description = (
        "insert a residual branch (1 or 2 layers, last one zero) after a hidden activation, "
        "joined by add"
    )

    def transform(  # type: ignore[override]  # params are keyword-only by contract
        self,
        parent: Architecture,
        site: str,
        *,
        batch: Batch | None,
        generator: torch.Generator,
        layers: int = 2,
        kernel_size: int = 3,
        batchnorm: bool = False,
    ) -> Architecture:
        """Insert ``site -> branch -> add(site, branch)`` with a zero last branch layer.

        Args:
            parent: the architecture; not modified.
            site: a hidden activation node (see :func:`deepen_sites`).
            batch: unused.
            generator: draws the first layer's weights when ``layers=2``.
            layers: 1 (a zero layer) or 2 (random layer, activation, zero layer).
            kernel_size: odd kernel of the new convs at signal and image sites.
            batchnorm: with ``layers=2``, a batch norm after the first layer (exact in
                train mode too, since the zero layer after it hides it).

        Returns:
            The child, equal to the parent as a function in train and eval mode.

        Raises:
            MorphismNotApplicable: bad site, ``layers`` not 1 or 2, even kernel size, or
                ``batchnorm`` with ``layers=1``.
        """
        shape = _checked_site(parent, site)
        _check_kernel(kernel_size)
        if layers not in (1, 2):
            raise MorphismNotApplicable(f"deepen.skip takes layers=1 or layers=2, got {layers!r}")
        if batchnorm and layers == 1:
            raise MorphismNotApplicable("deepen.skip: batchnorm needs layers=2 (it goes between)")
        chain = _skip_branch(parent, site, shape, generator, layers, kernel_size, batchnorm)
        return _insert(parent, site, chain, "skip", join=True)


def _skip_branch(
    parent: Architecture,
    site: str,
    shape: tuple[int, ...],
    generator: torch.Generator,
    layers: int,
    kernel_size: int,
    batchnorm: bool,
) -> list[Layer]:
    dtype, kind = parent.dtype, _kind(shape)
    spec = _layer_spec(shape, kernel_size)
    chain: list[Layer] = []
    if layers == 2:
        chain.append((f"{kind}1", spec, _random_weights(shape, kernel_size, dtype, generator)))
        if batchnorm:
            chain.append(_batchnorm(shape[0], dtype, eval_identity=False))
        act = parent.op(site) if parent.op(site) != "identity" else "relu"
        chain.append((act, NodeSpec(act), {}))
    chain.append((f"{kind}{layers}", spec, _zero_weights(shape, kernel_size, dtype)))
    return chain


def _insert(
    parent: Architecture, site: str, chain: list[Layer], stem: str, *, join: bool
) -> Architecture:
    """Insert ``chain`` after ``site``; with ``join``, as a branch added back to ``site``."""
    graph = parent.editable_graph()
    weights: dict[str, Any] = parent.weights_copy()
    prefix = _fresh_prefix(parent, stem)
    end = _add_chain(graph, weights, site, prefix, chain)
    if join:
        add = f"{prefix}_add"
        graph.add_node(add, spec=NodeSpec("add"))
        graph.add_edge(site, add, port=0)
        graph.add_edge(end, add, port=1)
        end = add
    _rewire(graph, parent, site, end)
    return Architecture(graph, weights)
