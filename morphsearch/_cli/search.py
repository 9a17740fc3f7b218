"""``morphsearch search`` (run here) and ``morphsearch submit`` (run on a Ray cluster).

Argument parsing only: the search is :func:`morphsearch.search.runner.run_search`, the
submission :func:`morphsearch.search.submit.submit_search`; both refuse a bad config
through the same :func:`morphsearch.search.preflight.check_config`.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]

DEFAULT_DB = "sqlite:///morphsearch.db"
DEFAULT_STORAGE = "./morphsearch-runs"


def register(subparsers: Any) -> None:
    """Add the ``search`` and ``submit`` commands."""
    search = subparsers.add_parser("search", help="run a morphism search (local Ray or --address)")
    search.add_argument("config", help="search config YAML (see configs/)")
    _common(search)
    search.add_argument(
        "--address", help="existing Ray cluster (auto, ray://HEAD:10001); default: local Ray"
    )
    search.add_argument("--name", help="search name (default: the config's name)")
    search.add_argument(
        "--resume", action="store_true", help="resume the search after the driver died"
    )
    search.add_argument(
        "--verbose", action="store_true", help="also show Ray's, Tune's and Optuna's output"
    )
    search.set_defaults(func=_search)

    submit = subparsers.add_parser("submit", help="submit a search to a Ray cluster (Ray Jobs API)")
    submit.add_argument("config", help="search config YAML")
    submit.add_argument("--address", required=True, help="Ray dashboard, e.g. http://HEAD:8265")
    _common(submit)
    submit.add_argument("--name", help="search name (default: the config's name)")
    submit.add_argument("--resume", action="store_true", help="resume the named search")
    submit.add_argument("--follow", action="store_true", help="stream the job's logs until it ends")
    submit.set_defaults(func=_submit)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", help=f"lineage database URL (default: the config's, else {DEFAULT_DB})"
    )
    parser.add_argument(
        "--storage",
        help=f"artifact/run storage: dir, NFS path or s3:// (default: the config's, else {DEFAULT_STORAGE})",
    )
    parser.add_argument(
        "--seed", type=int, help="the search's seed (default: the config's): its validation "
        "split, Optuna's draws and the trials' initialisations"
    )


def _search(args: argparse.Namespace) -> int:
    from morphsearch.search.config import load_config  # deferred: CLI start-up (pydantic)
    from morphsearch.search.runner import run_search  # deferred: CLI start-up (ray, torch)

    config = load_config(args.config).with_overrides(
        database=args.db, storage=args.storage, name=args.name, seed=args.seed
    )
    result = run_search(config, address=args.address, resume=args.resume, verbose=args.verbose)
    best = "none" if result.best_value is None else f"{result.best_value:.4g}"
    seed = "n/a" if result.seed_value is None else f"{result.seed_value:.4g}"
    print(
        f"search {result.name}: {result.trials} trials; best {result.metric} {best} "
        f"({result.best_arch_id}); trained seed {seed}"
    )
    print(f"lineage: {config.database}  runs: {result.experiment_path}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from morphsearch.search.submit import follow, submit_search  # deferred: CLI start-up (ray)

    submission = submit_search(
        args.config, address=args.address, database=args.db, storage=args.storage,
        name=args.name, seed=args.seed, resume=args.resume,
    )  # fmt: skip
    print(submission.job_id, flush=True)
    if not args.follow:
        return 0
    status = follow(submission)
    print(f"job {submission.job_id}: {status}")
    return 0 if status.endswith("SUCCEEDED") else 1
