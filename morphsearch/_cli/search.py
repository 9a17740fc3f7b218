"""``morphsearch search`` (run here) and ``morphsearch submit`` (run on a Ray cluster)."""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from morphsearch.errors import SearchError

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


def _entrypoint(args: argparse.Namespace, config_name: str) -> str:
    parts = ["python", "-m", "morphsearch", "search", config_name]
    for flag, value in (("--db", args.db), ("--storage", args.storage), ("--name", args.name),
                        ("--seed", args.seed)):
        if value is not None:
            parts += [flag, str(value)]
    parts += ["--address", "auto"]
    if args.resume:
        parts.append("--resume")
    return shlex.join(parts)


def _submit(args: argparse.Namespace) -> int:
    from morphsearch.search.config import load_config  # deferred: CLI start-up (pydantic)

    config_path = Path(args.config)
    config = load_config(config_path)  # fail here, not on the cluster
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(args.address)
    except Exception as exc:  # ray raises ConnectionError / RuntimeError variants
        raise SearchError(
            f"cannot reach the Ray Jobs API at {args.address} ({type(exc).__name__}); "
            "pass the dashboard address http://HEAD:8265 (and RAY_AUTH_MODE=token if the "
            "cluster uses token authentication)"
        ) from None
    with tempfile.TemporaryDirectory() as folder:
        # the job's working dir: the config, plus its seed graph when it names one
        shutil.copy(config_path, Path(folder) / config_path.name)
        graph = config.seed_graph.path
        if graph and not Path(graph).is_absolute() and Path(graph).exists():
            target = Path(folder) / graph
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(graph, target)
        job_id = _submit_job(
            client,
            entrypoint=_entrypoint(args, config_path.name),
            runtime_env={"working_dir": folder},
            metadata={"morphsearch_search": args.name or config.name or "search"},
        )
    print(job_id)
    if args.follow:
        return _follow(client, job_id)
    return 0


def _follow(client: Any, job_id: str) -> int:
    import asyncio

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    asyncio.run(tail())
    status = str(client.get_job_status(job_id))
    print(f"job {job_id}: {status}")
    return 0 if status.endswith("SUCCEEDED") else 1


_AGENT_STARTING = "No available agent to submit job"  # a head node still starting up
AGENT_WAIT_S = 60.0


def _submit_job(client: Any, **job: Any) -> str:
    """``client.submit_job``, retried while a freshly started head's job agent is not up
    yet (Ray answers 500 "No available agent to submit job, please try again later")."""
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return str(client.submit_job(**job))
        except RuntimeError as exc:
            if _AGENT_STARTING not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)
