"""Pictures: an architecture graph (and, later, lineage trees and Pareto fronts).

Everything renders with matplotlib's Agg backend, so it works with no display.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import networkx as nx

from morphsearch.errors import MorphSearchError

if TYPE_CHECKING:
    from morphsearch.arch import Architecture

__all__ = ["draw_architecture"]

_FORMATS = (".png", ".svg", ".pdf")
_COLOURS = {
    "input": "#d9d9d9",
    "output": "#d9d9d9",
    "linear": "#8ecae6",
    "conv2d": "#219ebc",
    "batchnorm": "#ffb703",
    "layernorm": "#ffb703",
    "add": "#fb8500",
    "concat": "#fb8500",
}
_ACTIVATION_COLOUR = "#b7e4c7"
_OTHER_COLOUR = "#f1faee"


def _checked_out(out: str | os.PathLike[str]) -> Path:
    path = Path(out)
    if path.suffix.lower() not in _FORMATS:
        raise MorphSearchError(
            f"cannot write {path}: use a file ending in {', '.join(_FORMATS)}"
        )
    if not path.parent.exists():
        raise MorphSearchError(f"cannot write {path}: folder {path.parent} does not exist")
    return path


def _label(arch: Architecture, node: str) -> str:
    spec = arch.spec(node)
    shape = "x".join(map(str, arch.shape(node)))
    main = {
        "linear": f"linear {spec.attrs.get('out_features')}",
        "conv2d": f"conv {spec.attrs.get('kernel_size')}x{spec.attrs.get('kernel_size')}",
    }.get(spec.op, spec.op)
    return f"{node}\n{main}\n[{shape}]"


def _positions(arch: Architecture) -> dict[str, tuple[float, float]]:
    pos: dict[str, tuple[float, float]] = {}
    for depth, layer in enumerate(nx.topological_generations(arch.graph)):
        layer = sorted(layer)
        for i, node in enumerate(layer):
            pos[node] = (i - (len(layer) - 1) / 2, -depth)
    return pos


def draw_architecture(arch: Architecture, out: str | os.PathLike[str]) -> Path:
    """Draw ``arch`` top to bottom, one box per layer, coloured by op.

    Raises:
        MorphSearchError: the output path has an unsupported suffix or no folder.
    """
    path = _checked_out(out)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from morphsearch.arch.ops import ACTIVATIONS

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
        op = arch.op(node)
        colour = _COLOURS.get(op, _ACTIVATION_COLOUR if op in ACTIVATIONS else _OTHER_COLOUR)
        ax.text(x, y, _label(arch, node), ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round,pad=0.4", "fc": colour, "ec": "#333333"})
    title = arch.graph.graph.get("name") or "architecture"
    ax.set_title(f"{title}: {arch.num_params:,} params, {arch.flops:,} FLOPs", fontsize=10)
    ax.set_xlim(min(x for x, _ in pos.values()) - 1, max(x for x, _ in pos.values()) + 1)
    ax.set_ylim(min(y for _, y in pos.values()) - 0.7, 0.7)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

