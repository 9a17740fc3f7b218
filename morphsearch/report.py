"""The HTML report of a search, from the lineage store.

:func:`write_report` writes one self-contained HTML page (pictures embedded as base64
PNG, inline CSS, no external resources) with the lineage tree, the Pareto front, a
summary, the best architectures and their lineage paths. It reads the store only;
torch is imported only to draw the best architecture's graph. The model card of an
export is :mod:`morphsearch.model_card`.
"""

from __future__ import annotations

import base64
import html
import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from morphsearch import __version__
from morphsearch.errors import ConfigError
from morphsearch.lineage import ArchitectureRecord, BestResult, LineageStore, open_store
from morphsearch.lineage.objective import metric_values, search_objective
from morphsearch.model_card import describe_morphisms, lineage_path, timestamp
from morphsearch.viz import draw_architecture, draw_pareto, draw_search_tree

__all__ = ["write_report"]


# ------------------------------------------------------------------ HTML report

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1180px;color:#1d3557;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.2em;border-bottom:1px solid #ccc;
padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f1faee}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee}.muted{color:#6c757d;font-size:.9em}
code{background:#f4f4f4;padding:1px 3px;border-radius:3px}
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return f"<td>{html.escape(str(value if value is not None else '-'))}</td>"
    if isinstance(value, int):
        return f'<td class="n">{value:,}</td>'
    if isinstance(value, float):
        return f'<td class="n">{value:.4g}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _png(draw: Any, *args: Any, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    draw(*args, buffer, **kwargs)
    return buffer.getvalue()


def _arch_png(record: ArchitectureRecord) -> bytes:
    """A drawing of the graph (weights are not needed, so none are loaded)."""
    from morphsearch.arch import load as load_graph  # deferred: torch, for this picture only

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "arch.png"
        draw_architecture(load_graph(record.graph), path)
        return path.read_bytes()


def _pictures(store: LineageStore, search: str, metric: str, mode: str,
              scored: list[BestResult]) -> str:  # fmt: skip
    nodes = [n for root in store.roots(search) for n in store.descendants(root)]
    values = {r.arch_id: r.value for r in scored}
    best = scored[0].arch_id if scored else None
    parts = ["<h2>Lineage tree</h2>"]
    parts.append(_img(_png(draw_search_tree, nodes, values, metric=metric,
                           title=f"search {search}", highlight=best), "lineage tree"))  # fmt: skip
    if scored:
        front = store.pareto(search, metric, mode, "params")  # type: ignore[arg-type]
        points = [(r.arch_id, float(r.params), r.value) for r in scored]
        ends = [(p.arch_id, float(p.cost), p.value) for p in front]
        parts += ["<h2>Pareto front: " + html.escape(metric) + " against parameters</h2>",
                  _img(_png(draw_pareto, points, ends, metric=metric, cost="params",
                            title=f"{search}: {metric} ({mode}) vs params"), "Pareto front")]  # fmt: skip
    return "\n".join(parts)


def _best_section(store: LineageStore, scored: list[BestResult], metric: str, top: int) -> str:
    if not scored:
        return f"<h2>Best architectures</h2><p>No {html.escape(metric)} values recorded yet.</p>"
    values = {r.arch_id: r for r in scored}
    rows = [(i + 1, r.arch_id, r.value, r.evaluation, r.trial_id, r.params, r.flops)
            for i, r in enumerate(scored[:top])]  # fmt: skip
    parts = [
        "<h2>Best architectures</h2>",
        _table(["rank", "architecture", metric, "evaluation", "trial", "params", "FLOPs"], rows),
        f"<h3>Best: <code>{html.escape(scored[0].arch_id)}</code></h3>",
        _img(_arch_png(store.architecture(scored[0].arch_id)), "best architecture"),
        "<h2>Lineage paths</h2>",
    ]
    for result in scored[:top]:
        steps = lineage_path(store, result.arch_id, values)
        parts.append(f"<h3><code>{html.escape(result.arch_id)}</code>: "
                     f"{len(steps) - 1} steps from the seed</h3>")  # fmt: skip
        parts.append(_table(
            ["step", "architecture", "edge", "trial", "morphisms", "params", metric],
            [(i, s.arch_id, s.kind, s.trial_id, describe_morphisms(s.morphisms), s.params,
              s.value.value if s.value else None) for i, s in enumerate(steps)],
        ))  # fmt: skip
    return "\n".join(parts)


def write_report(
    out: str | os.PathLike[str],
    *,
    db: str | None = None,
    search: str | None = None,
    metric: str | None = None,
    mode: str | None = None,
    top: int = 5,
) -> Path:
    """Write the HTML report of ``search`` to ``out``.

    Args:
        out: the ``.html`` file to write (its folder must exist).
        db: lineage database URL (default: ``$MORPHSEARCH_DB`` or ``sqlite:///morphsearch.db``).
        search: the search (default: the only one); metric/mode: default the config's.
        top: how many of the best architectures to list with their lineage paths.

    Returns:
        The path written.

    Raises:
        NotFound: no such search; ConfigError: no metric; MorphSearchError: bad ``out``.
    """
    path = Path(out)
    if not path.parent.is_dir():
        raise ConfigError(f"--out {path}: folder {path.parent} does not exist; create it first")
    with open_store(db) as store:
        name = store.resolve_search(search)
        metric, mode = search_objective(store, name, metric, mode)
        summary = store.summary(name, metric, mode)  # type: ignore[arg-type]
        scored = metric_values(store, name, metric, mode)
        pictures = _pictures(store, name, metric, mode, scored)
        best = _best_section(store, scored, metric, top)
        url = store.url
    statuses = ", ".join(f"{s} {n}" for s, n in sorted(summary.trials_by_status.items()))
    best_text = (f"{summary.best.value:.4g} ({summary.best.arch_id})" if summary.best
                 else "none yet")  # fmt: skip
    overview = _table(["field", "value"], [
        ("search", name), ("status", summary.status), ("created", str(summary.created)),
        ("trials", summary.n_trials), ("trials by status", statuses or "-"),
        ("architectures", summary.n_architectures), (f"best {metric} ({mode})", best_text),
    ])  # fmt: skip
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>morphsearch report: {html.escape(name)}</title><style>{_CSS}</style></head>"
        f"<body><h1>Search <code>{html.escape(name)}</code></h1>"
        f"<p class='muted'>morphsearch {__version__}, {timestamp()}, database "
        f"<code>{html.escape(url)}</code></p><h2>Summary</h2>{overview}{pictures}{best}"
        "</body></html>\n"
    )
    path.write_text(page, encoding="utf-8")
    return path

