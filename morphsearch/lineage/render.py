"""Lineage records as rich tables and trees (people) or JSON documents (scripts).

Only the CLI uses this module; rich is imported here, never by the store.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from morphsearch.lineage.records import ArchNode, EdgeStep, LineageDiff

__all__ = [
    "console",
    "json_dump",
    "morphism_names",
    "nested_tree",
    "rich_tree",
    "table",
    "to_jsonable",
]


def to_jsonable(value: Any) -> Any:
    """Records, lists and datetimes as plain JSON values (datetimes in ISO 8601)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def json_dump(value: Any, stream: IO[str]) -> None:
    json.dump(to_jsonable(value), stream, indent=2)
    stream.write("\n")


def console() -> Console:
    """A console on the current stdout, wide enough that ids are not cut when piped."""
    width = Console().width
    return Console(width=max(120, width), highlight=False, soft_wrap=False)


# what the "evaluation" of a reported value is, wherever one is shown
EVALUATION_MEANING = (
    "evaluation: the index of the evaluation at which the trial measured the value (its "
    "epoch, or its n-th block of budget.eval_every_steps optimizer steps)"
)


def table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    caption: str | None = None,
) -> Table:
    """A rich table; numbers right-aligned, floats with 4 significant digits."""
    out = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    materialised = [[_cell(v) for v in row] for row in rows]
    for index, name in enumerate(columns):
        numeric = bool(materialised) and all(_is_number(row[index]) for row in materialised)
        out.add_column(name, justify="right" if numeric else "left", overflow="fold")
    for row in materialised:
        out.add_row(*row)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def morphism_names(morphisms: Iterable[dict[str, Any]]) -> str:
    """``widen.gradmax@fc1 + deepen.identity@fc2`` for a chain of morphism records."""
    parts = []
    for record in morphisms:
        site = record.get("site")
        parts.append(f"{record.get('name', '?')}@{site}" if site else str(record.get("name", "?")))
    return " + ".join(parts) or "-"


def _label(node: ArchNode) -> str:
    how = "seed" if node.kind == "seed" else f"{node.kind}: {morphism_names(node.morphisms)}"
    return f"{node.arch_id}  params={node.params:,}  ({how})"


def rich_tree(title: str, nodes: Sequence[ArchNode], max_nodes: int) -> Tree:
    """The nodes (parents listed before children) as a rich tree under ``title``."""
    root = Tree(title)
    branches: dict[str, Tree] = {}
    for shown, node in enumerate(nodes):
        if shown == max_nodes:
            root.add(f"... {len(nodes) - max_nodes} more architectures (raise --max-nodes)")
            break
        parent = branches.get(node.parent_id or "", root)
        branches[node.arch_id] = parent.add(_label(node))
    return root


def nested_tree(nodes: Sequence[ArchNode]) -> list[dict[str, Any]]:
    """The nodes (parents first) as nested JSON: each with a ``children`` list."""
    docs: dict[str, dict[str, Any]] = {}
    tops: list[dict[str, Any]] = []
    for node in nodes:
        doc = {**to_jsonable(node), "children": []}
        docs[node.arch_id] = doc
        parent = docs.get(node.parent_id or "")
        (parent["children"] if parent is not None else tops).append(doc)
    return tops


def diff_table(diff: LineageDiff) -> Table:
    """The two sides of a diff as one table, top (common ancestor) first."""
    rows: list[tuple[str, EdgeStep]] = [(diff.a, s) for s in diff.to_a] + [
        (diff.b, s) for s in diff.to_b
    ]
    common = diff.common_ancestor or "none (different seeds)"
    return table(
        f"from common ancestor {common} to {diff.a} and {diff.b}",
        ["towards", "parent", "child", "kind", "trial", "morphisms"],
        [
            (side, s.parent_id, s.child_id, s.kind, s.trial_id, morphism_names(s.morphisms))
            for side, s in rows
        ],
    )
