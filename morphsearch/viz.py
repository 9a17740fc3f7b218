"""Pictures: an architecture graph, the lineage tree of a search, its Pareto front.

Everything renders with matplotlib's Agg backend, so it works with no display. The
lineage pictures take plain records and never import torch, so
``morphsearch lineage tree --png`` stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import networkx as nx

from morphsearch.errors import MorphSearchError

if TYPE_CHECKING:
    from morphsearch.arch import Architecture
    from morphsearch.lineage import ArchNode, LineageStore

__all__ = [
    "MAX_DRAWN_NODES",
    "describe",
    "draw_architecture",
    "draw_pareto",
    "draw_search_tree",
    "pareto_figure",
    "save_pareto_picture",
    "save_tree_picture",
]

Target = str | os.PathLike[str] | IO[bytes]

_FORMATS = (".png", ".svg", ".pdf")
MAX_DRAWN_NODES = 200  # one box per layer: more is unreadable (and slow to lay out)
_OTHER_COLOUR = "#f1faee"  # ops whose OpDef names no colour


def _checked_out(out: str | os.PathLike[str]) -> Path:
    path = Path(out)
    if path.suffix.lower() not in _FORMATS:
        raise MorphSearchError(
            f"cannot write {path}: use a file ending in {', '.join(_FORMATS)}"
        )
    if not path.parent.exists():
        raise MorphSearchError(f"cannot write {path}: folder {path.parent} does not exist")
    return path


def describe(arch: Architecture) -> str:
    """A short description of the network as it is now.

    A chain whose only layers with weights are linear reads as its widths ("64-47-10",
    input first); any other graph as its layer counts ("3 conv2d, 1 linear, 2 add").
    """
    layers = [n for n in nx.topological_sort(arch.graph) if arch.node_params(n)]
    is_chain = all(arch.graph.out_degree(n) <= 1 for n in arch.graph)
    if layers and is_chain and all(arch.op(n) == "linear" for n in layers):
        width = 1
        for size in arch.input_shape:
            width *= int(size)
        widths = [width, *(int(arch.spec(n).attrs["out_features"]) for n in layers)]
        return "-".join(map(str, widths))
    counts: dict[str, int] = {}
    for node in arch.graph:
        op = arch.op(node)
        if op not in ("input", "output"):
            counts[op] = counts.get(op, 0) + 1
    return ", ".join(f"{n} {op}" for op, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _label(arch: Architecture, node: str) -> str:
    from morphsearch.arch.ops import OPS

    spec = arch.spec(node)
    shape = "x".join(map(str, arch.shape(node)))
    label = OPS[spec.op].label
    main = label(spec.attrs) if label else spec.op
    return f"{node}\n{main}\n[{shape}]"


def _positions(arch: Architecture) -> dict[str, tuple[float, float]]:
    pos: dict[str, tuple[float, float]] = {}
    for depth, layer in enumerate(nx.topological_generations(arch.graph)):
        layer = sorted(layer)
        for i, node in enumerate(layer):
            pos[node] = (i - (len(layer) - 1) / 2, -depth)
    return pos


def _short(arch_id: str) -> str:
    """A label for a plot: the id without its ``search/`` prefix, at most 12 characters."""
    return arch_id.rsplit("/", 1)[-1][:12]


def draw_architecture(arch: Architecture, out: str | os.PathLike[str]) -> Path:
    """Draw ``arch`` top to bottom, one box per layer, coloured by op.

    Raises:
        MorphSearchError: the output path has an unsupported suffix or no folder.
    """
    path = _checked_out(out)
    if len(arch) > MAX_DRAWN_NODES:
        # a box per layer: thousands of boxes make an image no one can read, and
        # matplotlib takes minutes to lay them out
        raise MorphSearchError(
            f"cannot draw {len(arch):,} layers (at most {MAX_DRAWN_NODES} fit a readable "
            "picture); list them with: morphsearch graph show FILE (or --json)"
        )
    from morphsearch.arch.ops import OPS

    plt = _pyplot()

    pos = _positions(arch)
    depth = 1 - min(y for _, y in pos.values())
    breadth = 1 + max(x for x, _ in pos.values()) - min(x for x, _ in pos.values())
    fig, ax = plt.subplots(figsize=(max(4.0, 2.4 * breadth), max(4.0, 1.1 * depth)))
    # Edges that skip layers (residuals) curve around the boxes they would hide behind.
    skips = [(u, v) for u, v in arch.graph.edges if pos[u][1] - pos[v][1] > 1]
    direct = [e for e in arch.graph.edges if e not in set(skips)]
    for edges, style in ((direct, "arc3"), (skips, "arc3,rad=-0.35")):
        nx.draw_networkx_edges(arch.graph, pos, edgelist=edges, ax=ax, arrows=True,
                               arrowsize=12, edge_color="#555555", node_size=2600,
                               connectionstyle=style)
    for node, (x, y) in pos.items():
        colour = OPS[arch.op(node)].colour or _OTHER_COLOUR
        ax.text(x, y, _label(arch, node), ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round,pad=0.4", "fc": colour, "ec": "#333333"})
    # the graph's own shape, not its "name": a grown child keeps its seed's name
    title = describe(arch)
    ax.set_title(f"{title}: {arch.num_params:,} params, {arch.flops:,} FLOPs", fontsize=10)
    ax.set_xlim(min(x for x, _ in pos.values()) - 1, max(x for x, _ in pos.values()) + 1)
    ax.set_ylim(min(y for _, y in pos.values()) - 0.7, 0.7)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ lineage pictures


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out: Target) -> None:
    """Save to a path (format from its suffix) or a binary stream (PNG)."""
    plt = _pyplot()
    try:
        if isinstance(out, str | os.PathLike):
            fig.savefig(_checked_out(out), dpi=110)
        else:
            fig.savefig(out, format="png", dpi=110)
    finally:
        plt.close(fig)


def _tree_positions(nodes: Sequence[ArchNode]) -> dict[str, tuple[float, float]]:
    """Leaves at consecutive x, each parent centred over its children, depth down."""
    known = {n.arch_id for n in nodes}
    children: dict[str, list[str]] = {}
    tops: list[str] = []
    for node in nodes:
        if node.parent_id in known:
            children.setdefault(node.parent_id or "", []).append(node.arch_id)
        else:
            tops.append(node.arch_id)
    pos: dict[str, tuple[float, float]] = {}
    next_leaf = 0.0
    # iterative post-order: a deep lineage must not hit Python's recursion limit
    stack: list[tuple[str, int, bool]] = [(t, 0, False) for t in reversed(tops)]
    while stack:
        arch_id, level, expanded = stack.pop()
        kids = children.get(arch_id, [])
        if not kids:
            pos[arch_id], next_leaf = (next_leaf, -level), next_leaf + 1
        elif expanded:
            pos[arch_id] = (sum(pos[k][0] for k in kids) / len(kids), -level)
        else:
            stack.append((arch_id, level, True))
            stack.extend((k, level + 1, False) for k in reversed(kids))
    return pos


def draw_search_tree(
    nodes: Sequence[ArchNode],
    values: Mapping[str, float],
    out: Target,
    *,
    metric: str,
    title: str = "lineage",
    highlight: str | None = None,
) -> None:
    """Draw the lineage forest, each architecture coloured by its ``metric`` value.

    Args:
        nodes: the architectures, parents before children (``store.descendants``).
        values: ``{arch_id: value}``; architectures without one are drawn grey.
        out: a ``.png``/``.svg``/``.pdf`` path or a binary stream (PNG).
        highlight: an architecture to ring in red (e.g. the best one).

    Raises:
        MorphSearchError: the output path has an unsupported suffix or no folder, or
            there is nothing to draw.
    """
    if not nodes:
        raise MorphSearchError(f"{title}: no architectures to draw")
    plt = _pyplot()
    pos = _tree_positions(nodes)
    width = max(p[0] for p in pos.values()) + 1
    depth = 1 - min(p[1] for p in pos.values())
    fig, ax = plt.subplots(figsize=(min(18.0, max(6.0, 0.45 * width)), min(12.0, max(3.5, depth))))
    for node in nodes:
        if node.parent_id in pos:
            (x0, y0), (x1, y1) = pos[node.parent_id], pos[node.arch_id]
            style = "--" if node.kind == "growth" else "-"
            ax.plot([x0, x1], [y0, y1], style, color="#888888", linewidth=0.8, zorder=1)
    scored = [n.arch_id for n in nodes if n.arch_id in values]
    bare = [n.arch_id for n in nodes if n.arch_id not in values]
    size = 80 if len(nodes) <= 60 else 25
    if bare:
        ax.scatter([pos[a][0] for a in bare], [pos[a][1] for a in bare], s=size, c="#cccccc",
                   edgecolors="#666666", linewidths=0.5, zorder=2, label=f"no {metric}")
    if scored:
        points = ax.scatter([pos[a][0] for a in scored], [pos[a][1] for a in scored], s=size,
                            c=[values[a] for a in scored], cmap="viridis", edgecolors="#333333",
                            linewidths=0.5, zorder=3)
        fig.colorbar(points, ax=ax, label=metric, shrink=0.8)
    if highlight in pos:
        ax.scatter(*pos[highlight], s=size * 3, facecolors="none", edgecolors="#d62828",
                   linewidths=2, zorder=4, label=f"best ({highlight})")
    if len(nodes) <= 40:
        for arch_id, (x, y) in pos.items():
            ax.annotate(_short(arch_id), (x, y), xytext=(0, -11), textcoords="offset points",
                        ha="center", fontsize=6, color="#333333")
    ax.set_title(f"{title}: {len(nodes)} architectures (dashed: growth inside a trial)",
                 fontsize=10)
    ax.set_ylabel("depth (morphism steps from the seed)")
    ax.set_yticks(sorted({p[1] for p in pos.values()}))
    ax.set_yticklabels([str(int(-y)) for y in sorted({p[1] for p in pos.values()})])
    ax.set_xticks([])
    ax.set_xlim(-0.6, width - 0.4)
    ax.set_ylim(min(p[1] for p in pos.values()) - 0.4, 0.3)
    if bare or highlight in pos:  # below the axes, where it hides no architecture
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=2, fontsize=7,
                  frameon=False)
    fig.tight_layout()
    _save(fig, out)


def draw_pareto(
    points: Sequence[tuple[str, float, float]],
    front: Sequence[tuple[str, float, float]],
    out: Target,
    *,
    metric: str,
    cost: str = "params",
    title: str = "Pareto front",
) -> None:
    """Scatter ``metric`` against ``cost`` for every architecture, front highlighted.

    Args:
        points: ``(arch_id, cost, value)`` of every scored architecture.
        front: the non-dominated ones, cheapest first (``store.pareto``).
        out: a ``.png``/``.svg``/``.pdf`` path or a binary stream (PNG).

    Raises:
        MorphSearchError: the output path is unusable, or there are no points.
    """
    if not points:
        raise MorphSearchError(f"{title}: no architecture has a {metric} value to plot")
    fig = pareto_figure(points, front, metric=metric, cost=cost, title=title)
    _save(fig, out)


def pareto_figure(
    points: Sequence[tuple[str, float, float]],
    front: Sequence[tuple[str, float, float]],
    *,
    metric: str,
    cost: str = "params",
    title: str = "Pareto front",
) -> Any:
    """The figure of :func:`draw_pareto` (the caller saves or closes it)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    ax.scatter([p[1] for p in points], [p[2] for p in points], s=28, c="#8ecae6",
               edgecolors="#219ebc", label=f"architectures ({len(points)})", zorder=2)
    if front:
        xs, ys = [p[1] for p in front], [p[2] for p in front]
        ax.step(xs, ys, where="post", color="#d62828", linewidth=1.5, zorder=3)
        ax.scatter(xs, ys, s=70, c="#d62828", edgecolors="#333333",
                   label=f"Pareto front ({len(front)})", zorder=4)
    costs = [p[1] for p in points]
    if min(costs) > 0 and max(costs) / min(costs) > 50:  # growth spans decades of size
        ax.set_xscale("log")
    ax.set_xlabel(cost)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    # beside the axes, where it cannot cover a point
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    if front:
        _label_without_overlap(fig, ax, front[:12])
    return fig


# where a label may go around its point (points), tried in this order
_LABEL_OFFSETS = ((4, 4), (4, -11), (-4, 4), (-4, -11), (4, 14), (4, -21), (-4, 14), (-4, -21))


def _label_without_overlap(fig: Any, ax: Any, labelled: Sequence[tuple[str, float, float]]) -> None:
    """Label each point at the first offset where its text overlaps no other label and
    no marker; a label with no free place is left out (its point is still drawn)."""
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken = [_marker_box(ax, x, y) for _, x, y in labelled]
    for arch_id, x, y in labelled:
        for dx, dy in _LABEL_OFFSETS:
            text = ax.annotate(_short(arch_id), (x, y), xytext=(dx, dy), fontsize=7,
                               textcoords="offset points",
                               ha="left" if dx > 0 else "right")  # fmt: skip
            box = text.get_window_extent(renderer)
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            if inside and not any(box.overlaps(other) for other in taken):
                taken.append(box)
                break
            text.remove()


def _marker_box(ax: Any, x: float, y: float) -> Any:
    from matplotlib.transforms import Bbox

    px, py = ax.transData.transform((x, y))
    r = 4.0  # about a front marker's radius in pixels
    return Bbox.from_extents(px - r, py - r, px + r, py + r)


# ------------------------------------------------------------------ lineage CLI pictures


def save_tree_picture(
    store: LineageStore,
    search: str,
    nodes: Sequence[Any],
    out: str | os.PathLike[str],
    *,
    metric: str | None = None,
    mode: str | None = None,
    title: str = "lineage",
) -> None:
    """``lineage tree --png``: ``nodes`` coloured by their best ``metric`` in ``search``.

    Raises:
        ConfigError: no metric; MorphSearchError: an unusable output path.
    """
    from morphsearch.report import metric_values, objective

    metric, mode = objective(store.search(search).config, metric, mode)
    scored = metric_values(store, search, metric, mode)
    values = {r.arch_id: r.value for r in scored}
    best = scored[0].arch_id if scored else None
    draw_search_tree(nodes, values, out, metric=metric, title=title, highlight=best)


def save_pareto_picture(
    store: LineageStore,
    search: str,
    out: str | os.PathLike[str],
    *,
    metric: str,
    mode: str,
    cost: str = "params",
    evaluation: int | None = None,
) -> None:
    """``lineage pareto --png``: every architecture's ``metric`` against ``cost``, front in red.

    Raises:
        MorphSearchError: no scored architecture, or an unusable output path.
    """
    from morphsearch.report import ALL

    scored = store.best(search, metric, mode, evaluation, k=ALL)  # type: ignore[arg-type]
    front = store.pareto(search, metric, mode, cost, evaluation)  # type: ignore[arg-type]
    points = [(r.arch_id, float(r.params if cost == "params" else r.flops), r.value)
              for r in scored]  # fmt: skip
    ends = [(p.arch_id, float(p.cost), p.value) for p in front]
    title = f"{search}: {metric} ({mode}) against {cost}"
    draw_pareto(points, ends, out, metric=metric, cost=cost, title=title)
