"""Graph and weight surgery shared by the widening and splitting morphisms.

Widening a units layer *site* (``OPS[op].is_layer``: ``linear``, ``conv1d``, ``conv2d``)
appends ``k`` units (channels) at the end of its output axis. Its output travels through
a *path* of per-unit ops (``OPS[op].elementwise``: activations, batchnorm, dropout,
pooling, global average pooling; and at most one ``flatten``) to the *consumer* layers,
whose input axis grows too. After a ``flatten`` every channel owns ``L`` or ``H*W``
consecutive features (its *multiplicity*), so the new channels own the features appended
at the end.

A site is refused (:class:`MorphismNotApplicable`, with the reason) when its output
reaches ``add`` or ``concat`` (tied widths), ``layernorm`` (normalises across units, so
a new unit would change the others) or the network output.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

from morphsearch.arch import Architecture, NodeSpec
from morphsearch.arch.ops import OPS, dims
from morphsearch.errors import MorphismNotApplicable
from morphsearch.losses import gradients_on, task_loss, usable_batch

__all__ = [
    "Consumer",
    "WidenPath",
    "as_2d",
    "batch_loss",
    "conv_geometry_2d",
    "consumer_unit_slice",
    "fixed_dropout",
    "gradients_on",
    "path_params_copy",
    "set_unit_outgoing",
    "unit_outgoing",
    "usable_batch",
    "widen_path",
    "widen_sites",
    "widened",
]



def _is_layer(arch: Architecture, node: str) -> bool:
    return OPS[arch.op(node)].is_layer


def _flattens(op: str) -> bool:
    # flatten is the one op that turns a channel into several features
    return op == "flatten"


@dataclass(frozen=True)
class Consumer:
    """A layer fed by the site's units; each unit owns ``multiplicity`` input slots."""

    node: str
    multiplicity: int


@dataclass(frozen=True)
class WidenPath:
    """Where a site's units go: per-unit ops (with multiplicities) and consumer layers."""

    site: str
    width: int
    path: tuple[tuple[str, int], ...]
    consumers: tuple[Consumer, ...]

    @property
    def path_ops(self) -> tuple[str, ...]:
        return tuple(node for node, _ in self.path)


def widen_path(arch: Architecture, site: str) -> WidenPath:
    """Trace where the units of ``site`` flow.

    Raises:
        MorphismNotApplicable: ``site`` is not a widenable layer; the message says why.
    """
    if site not in arch or not _is_layer(arch, site):
        *rest, last = [op for op, d in OPS.items() if d.is_layer]
        raise MorphismNotApplicable(f"node {site!r} is not a {', '.join(rest)} or {last} layer")
    path: list[tuple[str, int]] = []
    consumers: list[Consumer] = []
    frontier = [(node, 1, False) for node in arch.consumers(site)]
    while frontier:
        node, mult, flattened = frontier.pop(0)
        op = arch.op(node)
        if OPS[op].is_layer:
            consumers.append(Consumer(node, mult))
            continue
        if _flattens(op):
            if flattened:
                raise MorphismNotApplicable(f"{site!r} reaches a second flatten at {node!r}")
            shape = arch.shape(arch.inputs(node)[0])
            mult, flattened = mult * _spatial(shape), True
        elif not OPS[op].elementwise:
            raise MorphismNotApplicable(
                f"{site!r} cannot be widened: its units reach {op} node {node!r} "
                "(tied widths, cross-unit normalisation or the output); widen another layer"
            )
        path.append((node, mult))
        frontier.extend((nxt, mult, flattened) for nxt in arch.consumers(node))
    width = arch.spec(site)[_width_attr(arch, site)]
    return WidenPath(site, width, tuple(path), tuple(consumers))


def widen_sites(arch: Architecture) -> list[str]:
    """Every units layer that :func:`widen_path` accepts, in graph order."""
    out = []
    for node in arch.nodes:
        if _is_layer(arch, node):
            try:
                widen_path(arch, node)
            except MorphismNotApplicable:
                continue
            out.append(node)
    return out


def why_not_widen(arch: Architecture, site: str) -> str | None:
    """The reason :func:`widen_path` refuses ``site``, or None if it accepts it."""
    try:
        widen_path(arch, site)
    except MorphismNotApplicable as exc:
        return str(exc)
    return None


def _width_attr(arch: Architecture, node: str) -> str:
    attr = OPS[arch.op(node)].width_attr
    assert attr is not None  # callers pass units layers
    return attr


def conv_geometry_2d(arch: Architecture, node: str) -> tuple[tuple[int, int], ...]:
    """Kernel, stride and padding of a conv node as 2-d pairs: a conv1d is a conv2d of
    height 1 (kernel ``(1, k)``, padding ``(0, p)``), so im2col code serves both."""
    spec, rank = arch.spec(node), OPS[arch.op(node)].spatial_rank or 1
    k, s, p = (dims(spec[a], rank) for a in ("kernel_size", "stride", "padding"))
    if rank == 1:
        return (1, k[0]), (1, s[0]), (0, p[0])
    return (k[0], k[1]), (s[0], s[1]), (p[0], p[1])


def as_2d(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, L]`` signals as ``[B, C, 1, L]`` images (see :func:`conv_geometry_2d`);
    images unchanged."""
    return x.unsqueeze(2) if x.dim() == 3 else x


def _spatial(shape: tuple[int, ...]) -> int:
    return math.prod(shape[1:])


def consumer_unit_slice(consumer: Consumer, unit: int) -> slice:
    """The consumer's input-axis slots owned by ``unit`` of the site."""
    m = consumer.multiplicity
    return slice(unit * m, (unit + 1) * m)


def unit_outgoing(arch: Architecture, wp: WidenPath, unit: int) -> list[torch.Tensor]:
    """Outgoing weights of ``unit``: one tensor per consumer, unit axis first removed.

    Shapes: linear consumer ``[out, m]``, conv consumer ``[out, *kernel]``.
    """
    out = []
    for c in wp.consumers:
        weight = arch.weights[c.node]["weight"]
        if weight.dim() == 2:
            out.append(weight[:, consumer_unit_slice(c, unit)])
        else:
            out.append(weight[:, unit])
    return out


def set_unit_outgoing(weight: torch.Tensor, consumer: Consumer, unit: int,
                      value: torch.Tensor) -> None:
    """Write ``unit``'s outgoing weights into a consumer's weight, in place (the inverse
    of :func:`unit_outgoing` for one consumer)."""
    if weight.dim() == 2:
        weight[:, consumer_unit_slice(consumer, unit)] = value
    else:
        weight[:, unit] = value


def _grow_outgoing(weight: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Append ``new`` along the input axis; ``new`` is ``[k, out, ...]`` per new unit."""
    if weight.dim() == 2:  # linear: [out, k*m], unit-major columns
        cols = new.permute(1, 0, 2).reshape(weight.shape[0], -1)
        return torch.cat([weight, cols.to(weight.dtype)], dim=1)
    return torch.cat([weight, new.transpose(0, 1).to(weight.dtype)], dim=1)


def _bn_identity(count: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    # weight 1, bias 0, running mean 0, var 1: maps an all-zero channel to zero in
    # eval mode (0 - 0) * 1 + 0, and in train mode (batch mean 0, centred input 0) too.
    return {
        "weight": torch.ones(count, dtype=dtype),
        "bias": torch.zeros(count, dtype=dtype),
        "running_mean": torch.zeros(count, dtype=dtype),
        "running_var": torch.ones(count, dtype=dtype),
    }


def path_params_copy(
    arch: Architecture, wp: WidenPath, units: list[int]
) -> dict[str, dict[str, torch.Tensor]]:
    """Per-unit parameters (batchnorm) of the path copied from ``units``, in order."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for node, mult in wp.path:
        params = arch.weights.get(node, {})
        idx = torch.tensor([u * mult + r for u in units for r in range(mult)], dtype=torch.long)
        out[node] = {
            name: t.index_select(0, idx) for name, t in params.items() if t.dim() == 1
        }
    return out


def widened(
    parent: Architecture,
    wp: WidenPath,
    in_weight: torch.Tensor,
    in_bias: torch.Tensor | None,
    outgoing: list[torch.Tensor],
    path_params: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> Architecture:
    """The parent with ``k`` units appended to the site.

    Args:
        parent: unchanged.
        wp: the site's :func:`widen_path`.
        in_weight: ``[k, ...]`` new rows of the site's weight.
        in_bias: ``[k]`` new bias entries (ignored when the site has no bias).
        outgoing: per consumer, ``[k, out, m]`` (linear) or ``[k, out, *kernel]`` (conv).
        path_params: new per-unit entries of path nodes (batchnorm) of length ``k*m``;
            default: the identity that maps a zero unit to zero.

    Returns:
        The child, in the parent's dtype.
    """
    k = in_weight.shape[0]
    dtype = parent.dtype
    spec: NodeSpec = parent.spec(wp.site)
    attr = _width_attr(parent, wp.site)
    # unchanged tensors are shared (architectures never write them); changed ones are
    # new tensors from torch.cat
    weights = {node: dict(params) for node, params in parent.weights.items()}
    site_w = weights[wp.site]
    site_w["weight"] = torch.cat([site_w["weight"], in_weight.to(dtype)])
    if "bias" in site_w:
        bias = in_bias if in_bias is not None else torch.zeros(k, dtype=dtype)
        site_w["bias"] = torch.cat([site_w["bias"], bias.to(dtype)])
    for node, mult in wp.path:
        if node not in weights:
            continue
        given = (path_params or {}).get(node) or _bn_identity(k * mult, dtype)
        for name, tensor in weights[node].items():
            if tensor.dim() == 1:
                weights[node][name] = torch.cat([tensor, given[name].to(dtype)])
    for c, new in zip(wp.consumers, outgoing, strict=True):
        weights[c.node]["weight"] = _grow_outgoing(weights[c.node]["weight"], new)
    return parent.respecified({wp.site: spec.replace(**{attr: spec[attr] + k})}, weights)


def site_rows_shape(arch: Architecture, site: str) -> tuple[int, ...]:
    """Shape of one output unit's incoming weights (a row of the site's weight)."""
    return tuple(arch.weights[site]["weight"].shape[1:])


def outgoing_shapes(arch: Architecture, wp: WidenPath) -> list[tuple[int, ...]]:
    """Per consumer, the shape of one unit's outgoing weights."""
    return [tuple(t.shape) for t in unit_outgoing(arch, wp, 0)]


def mean_outgoing_norm(arch: Architecture, wp: WidenPath) -> float:
    """Mean over the site's units of the norm of each unit's outgoing weights."""
    per_consumer = []
    for c in wp.consumers:
        weight = arch.weights[c.node]["weight"]
        if weight.dim() == 2:  # linear: unit u owns columns [u*m, (u+1)*m)
            weight = weight.reshape(weight.shape[0], wp.width, c.multiplicity)
        per_consumer.append(torch.linalg.vector_norm(weight, dim=(0, *range(2, weight.dim()))))
    norms = per_consumer[0] if len(per_consumer) == 1 else torch.stack(per_consumer).norm(dim=0)
    return float(norms.mean())


batch_loss = task_loss  # the Batch convention's loss, see morphsearch.losses


def fixed_dropout(arch: Architecture) -> contextlib.AbstractContextManager[None]:
    """Dropout masks from a fixed seed (reproducible), leaving the global RNG as it was.

    CPU generator only: torch.manual_seed would also seed every lazy accelerator (~1 ms
    a call). Without dropout nothing draws from the RNG, and nothing is done.
    """
    if "dropout" not in arch.ops:
        return contextlib.nullcontext()
    return _seeded_cpu_rng(0)


@contextlib.contextmanager
def _seeded_cpu_rng(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield
