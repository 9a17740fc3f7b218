"""Lineage queries at scale: 1,000,000 architectures on SQLite and PostgreSQL.

Builds many searches (each a tree grown like a real search: children of recent,
good parents, depth capped at 200), bulk-loads them through the real schema
(Alembic migrations, all indexes in place), then times the store's public
queries: ancestors of a deepest node, descendants of a ~10,000-node subtree,
best (any evaluation and one evaluation), Pareto front (params), summary and diff.

    .venv/bin/python bench/lineage_scale.py --n 1000000 --backend both

PostgreSQL: ``--pg-url URL`` uses an existing server (its database is emptied);
otherwise a throwaway server is started from /usr/lib/postgresql/*/bin (fsync off:
this measures queries, not durability). Results go to bench/BENCHMARKS.md under
"## Lineage at scale (issue 5)" (only that section is rewritten).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, text  # noqa: E402

from morphsearch.lineage import open_store  # noqa: E402

SECTION = "## Lineage at scale (issue 5)"
MAX_DEPTH = 200
SUBTREE = 10_000
EVALUATIONS = (1, 2, 3)
CREATED = "2025-01-01 00:00:00+00:00"
TARGETS_MS = {"ancestors": 20, "best": 50, "best@evaluation": 50, "pareto": 500}


@dataclass
class Forest:
    """One search's tree: parent index (-1 for the seed), depth, params per node."""

    parent: list[int]
    depth: list[int]
    params: list[int]
    acc: list[float]


def grow_search(size: int, rng: random.Random) -> Forest:
    """A search tree: each child's parent is a recent architecture (mean ~size/160 back).

    Recent parents make long chains (depth reaches the 200 cap) while the spread of
    offsets gives the bushy branching of a population-based search.
    """
    parent, depth, params, acc = [-1], [0], [10_000], [0.3]
    mean_back = max(1.0, size / 160)
    for i in range(1, size):
        p = max(0, i - 1 - int(rng.expovariate(1 / mean_back)))
        while depth[p] >= MAX_DEPTH:
            p = rng.randrange(i)
        parent.append(p)
        depth.append(depth[p] + 1)
        params.append(params[p] + rng.randrange(64, 4096))
        acc.append(min(0.999, acc[p] + rng.gauss(0.002, 0.01)))
    return Forest(parent, depth, params, acc)


def subtree_sizes(forest: Forest) -> list[int]:
    sizes = [1] * len(forest.parent)
    for i in range(len(sizes) - 1, 0, -1):  # children come after their parents
        sizes[forest.parent[i]] += sizes[i]
    return sizes


def table_rows(
    forest: Forest, search: int, first_arch: int, first_trial: int, rng: random.Random
) -> dict[str, list[tuple[Any, ...]]]:
    """Rows of every table for one search (explicit keys, so edges can refer to them)."""
    rows: dict[str, list[tuple[Any, ...]]] = {
        "architectures": [],
        "trials": [],
        "edges": [],
        "metrics": [],
    }
    morph = json.dumps(
        [
            {
                "name": "widen.gradmax",
                "site": "fc1",
                "params": {"k": 2},
                "seed": 0,
                "preservation_error": 1e-12,
            }
        ]
    )
    for i, parent in enumerate(forest.parent):
        key = first_arch + i
        graph = json.dumps(
            {
                "nodes": [{"id": "fc1", "op": "linear", "features": forest.params[i] // 100}],
                "edges": [],
            }
        )
        rows["architectures"].append(
            (
                key,
                f"s{search}-a{i}",
                search,
                graph,
                f"h{key:x}",
                None,
                forest.params[i],
                2 * forest.params[i],
                None,
                None,
                forest.depth[i],
                CREATED,
            )
        )
        if parent < 0:
            continue
        trial = first_trial + i
        status = "TERMINATED" if rng.random() > 0.05 else "ERROR"
        rows["trials"].append(
            (
                trial,
                f"s{search}-t{i}",
                search,
                first_arch + parent,
                key,
                "node-1",
                status,
                "{}",
                None,
                None,
                None,
            )
        )
        rows["edges"].append((trial, first_arch + parent, key, "trial", morph, trial))
        for evaluation in EVALUATIONS:
            value = forest.acc[i] - 0.05 * (len(EVALUATIONS) - evaluation) + rng.gauss(0, 0.003)
            pk = trial * len(EVALUATIONS) + evaluation
            rows["metrics"].append((pk, trial, key, search, evaluation, "val_acc", value))
    return rows


COLUMNS = {
    "searches": "id, name, config, status, created",
    "architectures": "id, arch_id, search_id, graph, structure_hash, weights_hash, params, flops, weights_uri, weights_sha256, depth, created",
    "trials": "id, trial_id, search_id, parent_id, child_id, node, status, config, error, started, ended",
    "edges": "id, parent_id, child_id, kind, morphisms, trial_id",
    "metrics": "id, trial_id, arch_id, search_id, evaluation, name, value",
}


def bulk_insert(connection: Any, backend: str, table: str, rows: list[tuple[Any, ...]]) -> None:
    """SQLite: one ``executemany``; PostgreSQL: ``COPY`` (both inside the caller's transaction)."""
    if not rows:
        return
    if backend == "sqlite":
        marks = ", ".join("?" * len(rows[0]))
        connection.exec_driver_sql(f"INSERT INTO {table} ({COLUMNS[table]}) VALUES ({marks})", rows)
        return
    cursor = connection.connection.dbapi_connection.cursor()
    with cursor.copy(f"COPY {table} ({COLUMNS[table]}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def secondary_indexes() -> list[Any]:
    from morphsearch.lineage.models import Base

    return [index for table in Base.metadata.sorted_tables for index in table.indexes]


def load(url: str, backend: str, n: int, search_size: int, seed: int) -> dict[str, Any]:
    """Create the schema (migrations) and bulk-load ``n`` architectures; return probes.

    Standard bulk-load practice: the secondary (non-unique) indexes are dropped
    during the load and built afterwards; keys and unique constraints stay on.
    PostgreSQL skips the per-row foreign-key triggers (``session_replication_role``)
    while loading rows generated consistent.
    """
    open_store(url, write=True).close()
    engine = create_engine(url)
    rng = random.Random(seed)
    probes: dict[str, Any] = {}
    arch_key, trial_key, search = 1, 1, 1
    started = time.perf_counter()
    with engine.begin() as connection:
        for index in secondary_indexes():
            index.drop(connection)
    while arch_key <= n:
        size = min(search_size, n - arch_key + 1)
        forest = grow_search(size, rng)
        if search == 1:
            probes = pick_probes(forest)
        rows = table_rows(forest, search, arch_key, trial_key, rng)
        with engine.begin() as connection:
            if backend == "sqlite":
                connection.exec_driver_sql("PRAGMA cache_size = -500000")
            else:  # skip per-row foreign-key triggers: the generated rows are consistent
                connection.exec_driver_sql("SET session_replication_role = replica")
            config = json.dumps({"metric": "val_acc", "mode": "max"})
            bulk_insert(
                connection,
                backend,
                "searches",
                [(search, f"search-{search}", config, "finished", CREATED)],
            )
            for table in ("architectures", "trials", "edges", "metrics"):
                bulk_insert(connection, backend, table, rows[table])
        arch_key, trial_key, search = arch_key + size, trial_key + size, search + 1
        print(
            f"  {arch_key - 1:,} architectures, {time.perf_counter() - started:.0f} s", flush=True
        )
    probes["insert_s"] = time.perf_counter() - started
    with engine.begin() as connection:
        if backend == "postgresql":
            connection.exec_driver_sql("SET maintenance_work_mem = '1GB'")
        else:
            connection.exec_driver_sql("PRAGMA cache_size = -1000000")
        for index in secondary_indexes():
            index.create(connection)
        if backend == "postgresql":  # explicit keys were inserted: move the sequences on
            for table in COLUMNS:
                connection.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
                )
        if backend == "sqlite":
            connection.exec_driver_sql("ANALYZE")
    if backend == "postgresql":  # as autovacuum would: statistics and the visibility map
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    probes["load_s"] = time.perf_counter() - started
    probes["searches"] = search - 1
    return probes


def pick_probes(forest: Forest) -> dict[str, Any]:
    """In search 1: a deepest node, and the node whose subtree is closest to 10,000."""
    deepest = max(range(len(forest.depth)), key=forest.depth.__getitem__)
    sizes = subtree_sizes(forest)
    subtree = min(range(1, len(sizes)), key=lambda i: abs(sizes[i] - SUBTREE))
    return {
        "deep": f"s1-a{deepest}",
        "depth": forest.depth[deepest],
        "subtree_root": f"s1-a{subtree}",
        "subtree_size": sizes[subtree],
        "other": f"s1-a{len(sizes) - 1}",
    }


def timed(call: Callable[[], Any], repeat: int = 7) -> tuple[float, float, Any]:
    """(first call ms, median of the following calls ms, result)."""
    start = time.perf_counter()
    result = call()
    first = (time.perf_counter() - start) * 1000
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return first, statistics.median(times), result


def run_queries(url: str, probes: dict[str, Any]) -> list[tuple[str, str, float, float]]:
    results = []
    with open_store(url) as store:
        cases: list[tuple[str, str, Callable[[], Any], Callable[[Any], str]]] = [
            (
                "ancestors",
                f"deepest node, depth {probes['depth']}",
                lambda: store.ancestors(probes["deep"]),
                lambda r: f"{len(r)} nodes",
            ),
            (
                "descendants",
                f"subtree of {probes['subtree_size']:,}",
                lambda: store.descendants(probes["subtree_root"]),
                lambda r: f"{len(r):,} nodes",
            ),
            (
                "best",
                "top 10, any evaluation",
                lambda: store.best("search-1", "val_acc", k=10),
                lambda r: f"{r[0].value:.4f}",
            ),
            (
                "best@evaluation",
                "top 10 at evaluation 2",
                lambda: store.best("search-1", "val_acc", evaluation=2, k=10),
                lambda r: f"{r[0].value:.4f}",
            ),
            (
                "pareto",
                "val_acc vs params, one search",
                lambda: store.pareto("search-1", "val_acc"),
                lambda r: f"{len(r)} points",
            ),
            (
                "summary",
                "one search",
                lambda: store.summary("search-1"),
                lambda r: f"{r.n_trials:,} trials",
            ),
            (
                "diff",
                "deepest vs last node",
                lambda: store.diff(probes["deep"], probes["other"]),
                lambda r: f"{len(r.to_a)}+{len(r.to_b)} edges",
            ),
        ]
        for name, what, call, describe in cases:
            first, median, result = timed(call)
            results.append((name, f"{what} -> {describe(result)}", first, median))
    return results


@contextlib.contextmanager
def postgres_url(given: str | None) -> Iterator[str]:
    if given:
        engine = create_engine(given)
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()
        yield given
        return
    sys.path.insert(0, str(REPO / "tests" / "lineage"))
    from _lineage_pg import PostgresServer, find_pg_bin

    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL binaries: apt-get install -y postgresql, or pass --pg-url")
    with PostgresServer(bin_dir) as server:
        yield server.url("postgres")


def bench_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            directory = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="lineage-bench-"))
            )
            url = f"sqlite:///{directory / 'lineage.db'}"
        else:
            url = stack.enter_context(postgres_url(args.pg_url))
        print(f"[{backend}] loading {args.n:,} architectures ...", flush=True)
        probes = load(url, backend, args.n, args.search_size, args.seed)
        print(f"[{backend}] loaded in {probes['load_s']:.1f} s; querying", flush=True)
        return {"backend": backend, "probes": probes, "results": run_queries(url, probes)}


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        SECTION,
        "",
        f"Command: `.venv/bin/python bench/lineage_scale.py --n {args.n} --backend {args.backend} --search-size {args.search_size}`",
        "",
        f"{args.n:,} architectures in {runs[0]['probes']['searches']} searches of {args.search_size:,} "
        f"(trees of depth up to {MAX_DEPTH}), one trial, one edge and {len(EVALUATIONS)} metric rows per "
        "non-seed architecture; loaded by bulk inserts (SQLite `executemany`, PostgreSQL `COPY`) into the Alembic schema, "
        "secondary indexes built after the load, then "
        "queried through `LineageStore` (median of 7 calls after a first call; times in ms). "
        "Machine: 2 shared CPU cores, 24 GB; PostgreSQL throwaway server with fsync off.",
        "",
        "| backend | query | what -> answer | first ms | median ms | target ms |",
        "|---|---|---|---:|---:|---:|",
    ]
    for run in runs:
        for name, what, first, median in run["results"]:
            target = TARGETS_MS.get(name)
            lines.append(
                f"| {run['backend']} | {name} | {what} | {first:.1f} | {median:.1f} | {target or '-'} |"
            )
    lines.append("")
    for run in runs:
        probes = run["probes"]
        lines.append(
            f"- {run['backend']}: bulk load {probes['load_s']:.0f} s "
            f"({probes['insert_s']:.0f} s inserting, the rest building indexes and ANALYZE)"
        )
    return "\n".join(lines) + "\n"


def write_section(section: str, path: Path) -> None:
    """Replace (or append) only our section of BENCHMARKS.md."""
    text_now = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text_now.find(SECTION)
    if start < 0:
        path.write_text(text_now.rstrip("\n") + "\n\n" + section)
        return
    end = text_now.find("\n## ", start + len(SECTION))
    rest = text_now[end + 1 :] if end >= 0 else ""
    path.write_text(text_now[:start] + section + ("\n" + rest if rest else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="architectures in total")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--search-size", type=int, default=50_000, help="architectures per search")
    parser.add_argument(
        "--pg-url", default=None, help="use this PostgreSQL database (it is emptied)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()
    backends = (
        ["sqlite", "postgresql"]
        if args.backend == "both"
        else [args.backend.replace("postgres", "postgresql")]
    )
    runs = [bench_backend(backend, args) for backend in backends]
    section = report(runs, args)
    print(section)
    if not args.no_write:
        write_section(section, REPO / "bench" / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
