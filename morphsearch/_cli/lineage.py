"""``morphsearch lineage searches|show|ancestors|descendants|best|pareto|diff|tree``.

Read-only queries of the lineage database: tables and trees for people, ``--json``
for scripts. Nothing here imports torch or ray, and a query never creates or
changes a database.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from morphsearch._cli.db import DB_HELP


def register(subparsers: Any) -> None:
    lineage = subparsers.add_parser("lineage", help="query the lineage database")
    commands = lineage.add_subparsers(dest="lineage_command", metavar="COMMAND", required=True)

    def command(
        name: str, help_text: str, handler: Any, *, search: bool = False
    ) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("--db", default=None, metavar="URL", help=DB_HELP)
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        if search:
            parser.add_argument(
                "--search", metavar="NAME", help="search name (default: the only one)"
            )
        parser.set_defaults(func=handler)
        return parser

    command("searches", "every search with its trial counts and best result", _searches)
    show = command("show", "one architecture, or a search summary", _show, search=True)
    show.add_argument(
        "arch_id", nargs="?", metavar="ARCH_ID", help="architecture id (omit: search)"
    )
    _metric_options(show, required=False)
    command("ancestors", "path from an architecture up to its seed", _ancestors).add_argument(
        "arch_id", metavar="ARCH_ID"
    )
    descendants = command("descendants", "every architecture grown from one", _descendants)
    descendants.add_argument("arch_id", metavar="ARCH_ID")
    descendants.add_argument("--max-depth", type=int, default=None, metavar="N")
    best = command("best", "the best architectures by a metric", _best, search=True)
    _metric_options(best, required=False)
    best.add_argument(
        "--evaluation",
        type=int,
        default=None,
        metavar="N",
        help="only values measured at the N-th evaluation (epoch, or block of eval_every_steps)",
    )
    best.add_argument("--top", type=int, default=5, metavar="K")
    pareto = command("pareto", "architectures not beaten by a cheaper one", _pareto, search=True)
    _metric_options(pareto, required=False)
    pareto.add_argument("--cost", choices=("params", "flops"), default="params")
    pareto.add_argument(
        "--evaluation",
        type=int,
        default=None,
        metavar="N",
        help="only values measured at the N-th evaluation (epoch, or block of eval_every_steps)",
    )
    pareto.add_argument("--png", metavar="FILE", help="also draw metric vs cost (.png/.svg/.pdf)")
    diff = command("diff", "morphisms from the common ancestor down to each architecture", _diff)
    diff.add_argument("a", metavar="ARCH_A")
    diff.add_argument("b", metavar="ARCH_B")
    tree = command(
        "tree", "the lineage as a tree (of a search, or under ARCH_ID)", _tree, search=True
    )
    tree.add_argument(
        "arch_id", nargs="?", metavar="ARCH_ID", help="root (omit: the search's seeds)"
    )
    tree.add_argument("--max-depth", type=int, default=None, metavar="N")
    tree.add_argument("--max-nodes", type=int, default=200, metavar="N")
    tree.add_argument("--png", metavar="FILE", help="also draw the tree coloured by the metric")
    _metric_options(tree, required=False)


def _metric_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--metric", required=required, help="metric name (default: from the search config)"
    )
    parser.add_argument(
        "--mode",
        choices=("max", "min"),
        default=None,
        help="default: from the search config, else max",
    )


def _open(args: argparse.Namespace) -> Any:
    from morphsearch.lineage import LineageStore  # deferred: CLI start-up (sqlalchemy)

    store = LineageStore(args.db, write=False)
    try:
        # the ids progress lines print ("58479e61") stand for their full ids
        for attr in ("arch_id", "a", "b"):
            if getattr(args, attr, None):
                setattr(args, attr, store.resolve_arch_id(getattr(args, attr)))
    except BaseException:
        store.close()
        raise
    return store


def _metric(store: Any, search: str, args: argparse.Namespace) -> tuple[str, Any]:
    """``--metric``/``--mode``, else the objective in the search config."""
    # deferred: CLI start-up (sqlalchemy)
    from morphsearch.lineage.objective import search_objective

    return search_objective(store, search, args.metric, args.mode)


def _emit(args: argparse.Namespace, document: Any, renderable: Any) -> int:
    from morphsearch.lineage import render  # deferred: CLI start-up (sqlalchemy, rich)

    if args.json:
        render.json_dump(document, sys.stdout)
    else:
        render.console().print(renderable() if callable(renderable) else renderable)
    return 0


def _searches(args: argparse.Namespace) -> int:
    from morphsearch.lineage import render  # deferred: CLI start-up (sqlalchemy, rich)

    with _open(args) as store:
        summaries = [store.summary(s.name) for s in store.searches()]
    rows = [
        (s.name, s.status, s.created, s.n_trials, _statuses(s.trials_by_status), s.n_architectures,
         f"{s.best.metric}={s.best.value:.4g} ({s.best.arch_id})" if s.best else None)
        for s in summaries
    ]  # fmt: skip
    columns = ["search", "status", "created", "trials", "by status", "architectures", "best"]
    return _emit(args, summaries, lambda: render.table(f"searches in {store.url}", columns, rows))


def _statuses(counts: dict[str, int]) -> str:
    return ", ".join(f"{status} {n}" for status, n in sorted(counts.items())) or "-"


def _show(args: argparse.Namespace) -> int:
    from morphsearch.lineage import render  # deferred: CLI start-up (sqlalchemy, rich)

    with _open(args) as store:
        if args.arch_id:
            record = store.architecture(args.arch_id)
            nodes = record.graph.get("nodes") if isinstance(record.graph, dict) else None
            fields = render.to_jsonable(record)
            fields["graph"] = (
                f"{len(nodes)} nodes" if isinstance(nodes, list) else "(graph JSON: use --json)"
            )
            fields["morphisms"] = render.morphism_names(record.morphisms)
            return _emit(
                args,
                record,
                lambda: render.table(
                    f"architecture {record.arch_id}", ["field", "value"], fields.items()
                ),
            )
        search = store.resolve_search(args.search)
        summary = store.summary(search, args.metric, args.mode)
    fields = render.to_jsonable(summary)
    fields["trials_by_status"] = _statuses(summary.trials_by_status)
    best = summary.best
    fields["best"] = (
        f"{best.metric}={best.value:.4g}: {best.arch_id} (trial {best.trial_id}, "
        f"evaluation {best.evaluation})"
        if best
        else None
    )
    return _emit(
        args,
        summary,
        lambda: render.table(
            f"search {search}", ["field", "value"], fields.items(), render.EVALUATION_MEANING
        ),
    )


def _node_rows(nodes: Any) -> list[tuple[Any, ...]]:
    from morphsearch.lineage import render  # deferred: CLI start-up (sqlalchemy, rich)

    return [
        (
            n.arch_id,
            n.parent_id,
            n.depth,
            n.params,
            n.flops,
            n.kind,
            n.trial_id,
            render.morphism_names(n.morphisms),
        )
        for n in nodes
    ]


NODE_COLUMNS = ["architecture", "parent", "depth", "params", "flops", "edge", "trial", "morphisms"]


def _ancestors(args: argparse.Namespace) -> int:
    from morphsearch.lineage import render  # deferred: CLI start-up (sqlalchemy, rich)

    with _open(args) as store:
        nodes = store.ancestors(args.arch_id)
    title = f"ancestors of {args.arch_id} ({len(nodes) - 1} edges to its seed)"
    return _emit(args, nodes, lambda: render.table(title, NODE_COLUMNS, _node_rows(nodes)))


def _descendants(args: argparse.Namespace) -> int:
    from morphsearch.lineage import render  # deferred: CLI start-up (sqlalchemy, rich)

    with _open(args) as store:
        nodes = store.descendants(args.arch_id, args.max_depth)
    title = f"descendants of {args.arch_id} ({len(nodes) - 1} architectures)"
    return _emit(args, nodes, lambda: render.table(title, NODE_COLUMNS, _node_rows(nodes)))


def _best(args: argparse.Namespace) -> int:
    from morphsearch.lineage import render  # deferred: CLI start-up (sqlalchemy, rich)
    from morphsearch.lineage.objective import test_scores  # deferred: CLI start-up (sqlalchemy)

    with _open(args) as store:
        search = store.resolve_search(args.search)
        metric, mode = _metric(store, search, args)
        results = store.best(search, metric, mode, args.evaluation, args.top)
        tests = {r.arch_id: {n: m.value for n, m in
                             test_scores(store, r.trial_id, r.arch_id).items()}
                 for r in results}  # fmt: skip
    at = f" at evaluation {args.evaluation}" if args.evaluation is not None else ""
    rows = [
        (i + 1, r.arch_id, r.value, r.evaluation, r.trial_id, r.params, r.flops)
        for i, r in enumerate(results)
    ]
    columns = ["rank", "architecture", metric, "evaluation", "trial", "params", "flops"]
    # scored once on the test split at the search's end (never used to rank): shown beside
    shown = [n for n in ("test_accuracy", "test_loss") if any(n in t for t in tests.values())]
    rows = [(*row, *(tests[r.arch_id].get(n) for n in shown)) for row, r in zip(rows, results)]
    columns += shown
    return _emit(
        args,
        results,
        lambda: render.table(
            f"best of {search} by {metric} ({mode}){at}", columns, rows, render.EVALUATION_MEANING
        ),
    )


def _pareto(args: argparse.Namespace) -> int:
    from morphsearch.lineage import render  # deferred: CLI start-up (sqlalchemy, rich)

    with _open(args) as store:
        search = store.resolve_search(args.search)
        metric, mode = _metric(store, search, args)
        front = store.pareto(search, metric, mode, args.cost, args.evaluation)
        if args.png:
            _draw_pareto(store, search, front, args, metric, mode)
            print(f"wrote {args.png}", file=sys.stderr)
    title = f"Pareto front of {search}: {metric} ({mode}) against {args.cost}"
    rows = [(p.arch_id, p.cost, p.value) for p in front]
    return _emit(
        args, front, lambda: render.table(title, ["architecture", args.cost, metric], rows)
    )


def _diff(args: argparse.Namespace) -> int:
    from morphsearch.lineage import render  # deferred: CLI start-up (sqlalchemy, rich)

    with _open(args) as store:
        diff = store.diff(args.a, args.b)
    return _emit(args, diff, lambda: render.diff_table(diff))


def _tree(args: argparse.Namespace) -> int:
    from morphsearch.lineage import render  # deferred: CLI start-up (sqlalchemy, rich)

    with _open(args) as store:
        if args.arch_id:
            title, roots = f"lineage under {args.arch_id}", [args.arch_id]
        else:
            search = store.resolve_search(args.search)
            title, roots = f"lineage of search {search}", store.roots(search)
        nodes = [node for root in roots for node in store.descendants(root, args.max_depth)]
        if args.png:
            owner = store.architecture(args.arch_id).search if args.arch_id else search
            _draw_tree(store, owner, nodes, args, title)
            print(f"wrote {args.png}", file=sys.stderr)
    if args.json:
        return _emit(args, render.nested_tree(nodes), None)
    return _emit(args, None, render.rich_tree(title, nodes, args.max_nodes))


def _draw_pareto(
    store: Any, search: str, front: Any, args: argparse.Namespace, metric: str, mode: str
) -> None:
    """``--png``: every architecture's ``metric`` against ``--cost``, the front in red."""
    from morphsearch.lineage.objective import metric_values  # deferred: CLI start-up (sqlalchemy)
    from morphsearch.viz import draw_pareto  # deferred: CLI start-up (networkx)

    scored = metric_values(store, search, metric, mode, args.evaluation)
    points = [(r.arch_id, float(r.params if args.cost == "params" else r.flops), r.value)
              for r in scored]  # fmt: skip
    ends = [(p.arch_id, float(p.cost), p.value) for p in front]
    title = f"{search}: {metric} ({mode}) against {args.cost}"
    draw_pareto(points, ends, args.png, metric=metric, cost=args.cost, title=title)


def _draw_tree(store: Any, search: str, nodes: Any, args: argparse.Namespace, title: str) -> None:
    """``--png``: ``nodes`` coloured by their best metric in ``search``, the best ringed."""
    from morphsearch.lineage.objective import metric_values  # deferred: CLI start-up (sqlalchemy)
    from morphsearch.viz import draw_search_tree  # deferred: CLI start-up (networkx)

    metric, mode = _metric(store, search, args)
    scored = metric_values(store, search, metric, mode)
    values = {r.arch_id: r.value for r in scored}
    best = scored[0].arch_id if scored else None
    draw_search_tree(nodes, values, args.png, metric=metric, title=title, highlight=best)
