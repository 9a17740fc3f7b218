"""Tied widening: widen every layer that feeds the same ``add`` together.

``widen.random``/``widen.split`` refuse a layer whose units reach an ``add``: the add's
inputs must keep one width, so widening one branch alone breaks the graph. Here a site's
*tie group* is closed over the adds: every tensor whose unit axis must grow is followed
backwards (per-unit ops to their input, an ``add`` to all its inputs) to the layers that
produce it (the group's *sites*, all widened by the same ``k`` units) and forwards
(per-unit ops, adds, at most one ``flatten``) to the layers that consume it (the
*consumers*, whose input axis grows). In a ResNet of :func:`morphsearch.builders.resnet`
the stem and the last conv of every block form one group: the residual stream widens as
a whole. ``concat`` ties are not handled (a concatenated input's new units would sit in
the middle of the concat's channels); a group that reaches one is refused, as are
groups reaching the network input or output, ``layernorm``, or an ``add`` after a
``flatten``.

Both modes are exact (train and eval mode), as their one-layer counterparts:

* ``mode="split"`` (Net2Wider): new unit ``i`` copies unit ``j`` in every site (incoming
  weights, bias) and every batchnorm of the group, so at every tensor of the group it
  equals unit ``j``, through the adds too (sum of copies = copy of the sum); every
  consumer's outgoing weights of ``j`` are divided among ``j`` and its copies.
* ``mode="random"``: zero incoming weights and bias in every site and identity batchnorm
  channels give exact zeros at every tensor of the group (0 + 0 through the adds); the
  consumers' new outgoing weights are random, of norm ``scale`` times the mean.

A layer that is both a site and a consumer (a residual block of one conv) grows its
input axis first and then copies (or zeroes) its rows, so a copy row reads the copied
inputs with the divided weights: the sum is unchanged.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import torch

from morphsearch.arch import Architecture
from morphsearch.arch.ops import OPS
from morphsearch.errors import MorphismNotApplicable
from morphsearch.morphisms._registry import Batch, Morphism, register
from morphsearch.morphisms._surgery import (
    Consumer,
    WidenPath,
    _bn_identity,
    _grow_outgoing,
    mean_outgoing_norm,
    set_unit_outgoing,
    unit_outgoing,
)

__all__ = ["TiedGroup", "TiedWiden", "tied_group", "tied_sites"]

# Op knowledge kept in one place until the op table answers it (OPS[op].width_attr).
def _is_layer(arch: Architecture, node: str) -> bool:
    return OPS[arch.op(node)].is_layer


@dataclass(frozen=True)
class TiedGroup:
    """Layers widened together: ``sites`` (output axis grows), ``path`` (non-layer nodes
    whose output grows, with the multiplicity of a unit there), ``consumers``, and the
    ``adds`` that tie them."""

    sites: tuple[str, ...]
    width: int
    path: tuple[tuple[str, int], ...]
    consumers: tuple[Consumer, ...]
    adds: tuple[str, ...]

    def as_path(self) -> WidenPath:
        """The group as one :class:`WidenPath` (for the per-consumer helpers)."""
        return WidenPath(self.sites[0], self.width, self.path, self.consumers)


class _Closure:
    """The tie group of one site, built by following growing tensors both ways."""

    def __init__(self, arch: Architecture, site: str) -> None:
        self.arch, self.origin = arch, site
        self.mult: dict[str, int] = {}  # growing node outputs -> multiplicity
        self.consumers: dict[str, int] = {}
        self.todo: list[str] = []

    def refuse(self, node: str, why: str) -> MorphismNotApplicable:
        return MorphismNotApplicable(
            f"{self.origin!r} cannot be widened with its tie group: {why} at {node!r}; "
            "widen another layer"
        )

    def grow(self, node: str, mult: int) -> None:
        if node in self.mult:
            if self.mult[node] != mult:
                raise self.refuse(node, "its units arrive both flattened and not")
            return
        self.mult[node] = mult
        self.todo.append(node)

    def run(self) -> TiedGroup:
        self.grow(self.origin, 1)
        while self.todo:
            node = self.todo.pop(0)
            self._backward(node)
            self._forward(node)
        arch = self.arch
        sites = tuple(n for n in arch.nodes if n in self.mult and _is_layer(arch, n))
        path = tuple((n, self.mult[n]) for n in arch.nodes
                     if n in self.mult and not _is_layer(arch, n))
        consumers = tuple(Consumer(n, self.consumers[n]) for n in arch.nodes
                          if n in self.consumers)
        width = int(arch.shape(self.origin)[0])  # units along the channel axis
        adds = tuple(n for n, _ in path if arch.op(n) == "add")
        return TiedGroup(sites, width, path, consumers, adds)

    def _backward(self, node: str) -> None:
        """What must grow for ``node``'s output to grow."""
        arch, op, mult = self.arch, self.arch.op(node), self.mult[node]
        if _is_layer(arch, node):
            return  # a site: its width attribute grows
        if op == "add":
            if mult != 1:
                raise self.refuse(node, "an add after a flatten ties flattened units")
            for src in arch.inputs(node):
                self.grow(src, 1)
        elif op == "flatten":
            src = arch.inputs(node)[0]
            spatial = math.prod(arch.shape(src)[1:])
            if mult % spatial:
                raise self.refuse(node, "a flatten whose units are not whole channels")
            self.grow(src, mult // spatial)
        elif OPS[op].elementwise:
            self.grow(arch.inputs(node)[0], mult)
        else:
            raise self.refuse(node, f"the units come from {op} (its width cannot grow)")

    def _forward(self, node: str) -> None:
        """Everything that reads ``node``'s growing output."""
        arch, mult = self.arch, self.mult[node]
        for c in arch.consumers(node):
            op = arch.op(c)
            if _is_layer(arch, c):
                self.consumers[c] = mult
            elif op == "flatten":
                self.grow(c, mult * math.prod(arch.shape(node)[1:]))
            elif op == "add" or OPS[op].elementwise:
                self.grow(c, mult)
            else:
                raise self.refuse(c, f"the units reach {op} (tied widths, cross-unit "
                                     "normalisation or the output)")


def tied_group(arch: Architecture, site: str) -> TiedGroup:
    """The layers widened together with ``site``.

    Raises:
        MorphismNotApplicable: ``site`` is not a layer, or its group reaches something
            whose width cannot follow (the message names the node).
    """
    if site not in arch or not _is_layer(arch, site):
        raise MorphismNotApplicable(f"node {site!r} is not a linear or conv layer")
    return _Closure(arch, site).run()


def _why_not(arch: Architecture, site: str) -> str | None:
    try:
        group = tied_group(arch, site)
    except MorphismNotApplicable as exc:
        return str(exc)
    if not group.adds:
        return (f"{site!r} feeds no add; widen it alone with widen.random, widen.split "
                "or widen.gradmax")
    return None


def tied_sites(arch: Architecture) -> list[str]:
    """Layers whose tie group holds an ``add`` and can be widened, in graph order."""
    return [n for n in arch.nodes if _is_layer(arch, n) and _why_not(arch, n) is None]


# ------------------------------------------------------------------- surgery


def _widened(
    parent: Architecture,
    group: TiedGroup,
    outgoing: list[torch.Tensor],
    rows: list[int] | None,
    path_rows: list[int] | None,
    scaled: dict[str, torch.Tensor] | None = None,
) -> Architecture:
    """The parent with ``k`` units appended to every site of ``group``.

    ``outgoing``: per consumer, the new units' outgoing weights ``[k, out, ...]``.
    ``rows``: per new unit, the unit it copies (incoming weights, bias, batchnorm); None:
    zero incoming weights and bias, identity batchnorm channels. ``scaled``: consumer
    weights to use instead of the parent's (the split's divided originals).
    """
    k = len(outgoing[0]) if outgoing else len(rows or [])
    dtype = parent.dtype
    weights = {node: dict(params) for node, params in parent.weights.items()}
    for c, new in zip(group.consumers, outgoing, strict=True):  # input axes first
        base = (scaled or {}).get(c.node, weights[c.node]["weight"])
        weights[c.node]["weight"] = _grow_outgoing(base, new)
    for site in group.sites:
        params = weights[site]
        weight = params["weight"]
        if rows is None:
            params["weight"] = torch.cat([weight, weight.new_zeros(k, *weight.shape[1:])])
        else:
            idx = torch.tensor(rows, dtype=torch.long)
            params["weight"] = torch.cat([weight, weight.index_select(0, idx)])
        if "bias" in params:
            bias = params["bias"]
            extra = bias.new_zeros(k) if rows is None else bias.index_select(0, idx)
            params["bias"] = torch.cat([bias, extra])
    for node, mult in group.path:
        if node not in weights:
            continue
        if path_rows is None:
            given = _bn_identity(k * mult, dtype)
        else:
            idx = torch.tensor([u * mult + r for u in path_rows for r in range(mult)])
            given = {n: t.index_select(0, idx) for n, t in weights[node].items() if t.dim() == 1}
        for name, tensor in weights[node].items():
            if tensor.dim() == 1:
                weights[node][name] = torch.cat([tensor, given[name].to(dtype)])
    specs = {}
    for site in group.sites:
        spec = parent.spec(site)
        attr = OPS[spec.op].width_attr
        assert attr is not None  # sites are units layers
        specs[site] = spec.replace(**{attr: spec[attr] + k})
    return parent.respecified(specs, weights)


def _split(parent: Architecture, group: TiedGroup, chosen: list[int]) -> Architecture:
    wp = group.as_path()
    scaled = {c.node: parent.weights[c.node]["weight"].clone() for c in group.consumers}
    shares: dict[int, list[torch.Tensor]] = {}
    for unit, copies in Counter(chosen).items():
        share = [w / (copies + 1) for w in unit_outgoing(parent, wp, unit)]
        for c, s in zip(group.consumers, share, strict=True):
            set_unit_outgoing(scaled[c.node], c, unit, s)
        shares[unit] = share
    outgoing = [torch.stack([shares[u][j] for u in chosen]) for j in range(len(group.consumers))]
    return _widened(parent, group, outgoing, chosen, chosen, scaled)


def _random(parent: Architecture, group: TiedGroup, k: int, scale: float,
            generator: torch.Generator) -> Architecture:
    wp = group.as_path()
    shapes = [tuple(t.shape) for t in unit_outgoing(parent, wp, 0)]
    d_out = sum(math.prod(s) for s in shapes)
    vecs = torch.randn(k, d_out, generator=generator, dtype=torch.float64)
    norm = float(scale) * mean_outgoing_norm(parent, wp)
    vecs = (vecs / vecs.norm(dim=1, keepdim=True) * norm).to(parent.dtype)
    outgoing, start = [], 0
    for shape in shapes:
        n = math.prod(shape)
        outgoing.append(vecs[:, start : start + n].reshape(k, *shape))
        start += n
    return _widened(parent, group, outgoing, None, None)


@register
class TiedWiden(Morphism):
    """Widen a layer together with every layer tied to it through ``add``.

    Params:
        k: number of new units in every layer of the group.
        mode: ``"split"`` (Net2Wider copies of units drawn by the seed, or ``units``) or
            ``"random"`` (zero incoming, random outgoing of norm ``scale`` times the
            mean outgoing norm).
        units: with ``mode="split"``, the units to copy (overrides ``k``).
        scale: with ``mode="random"``, the relative norm of the new outgoing weights.
    """

    name = "widen.tied"
    description = "widen every layer feeding the same add together (a residual stage)"

    def sites(self, arch: Architecture) -> list[str]:
        return tied_sites(arch)

    def accepts(self, arch: Architecture, site: str) -> bool:
        return _is_layer(arch, site) and _why_not(arch, site) is None

    def why_not(self, arch: Architecture, site: str) -> str | None:
        if not _is_layer(arch, site):
            return f"{site!r} is {arch.op(site)}, not a linear or conv layer"
        return _why_not(arch, site)

    def transform(  # type: ignore[override]  # params are keyword-only by contract
        self,
        parent: Architecture,
        site: str,
        *,
        batch: Batch | None,
        generator: torch.Generator,
        k: int = 1,
        mode: str = "split",
        units: list[int] | None = None,
        scale: float = 1.0,
    ) -> Architecture:
        group = tied_group(parent, site)
        if mode not in ("split", "random"):
            raise MorphismNotApplicable(f"{self.name}: mode={mode!r} must be 'split' or 'random'")
        if units is not None:
            if mode != "split":
                raise MorphismNotApplicable(f"{self.name}: units= needs mode='split'")
            if (not isinstance(units, list) or not units
                    or any(not isinstance(u, int) or not 0 <= u < group.width for u in units)):
                raise MorphismNotApplicable(
                    f"{self.name}: units={units!r} must be a non-empty list of ints in "
                    f"[0, {group.width})"
                )
            return _split(parent, group, list(units))
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise MorphismNotApplicable(f"{self.name}: k={k!r} must be a positive int")
        if mode == "random":
            return _random(parent, group, k, scale, generator)
        chosen = [int(u) for u in torch.randint(group.width, (k,), generator=generator)]
        return _split(parent, group, chosen)
