"""Submit a search to a Ray cluster through the Ray Jobs API (``morphsearch submit``).

The config is checked here first, by the same :func:`~morphsearch.search.preflight.check_config`
that ``morphsearch search`` runs, so a config the search would refuse is refused before
the cluster is contacted, with the same one-line message. Then the config, its seed
graph and a relative ``npz`` dataset are staged in a temporary folder, uploaded as the
job's working directory, and the job runs ``python -m morphsearch search CONFIG
--address auto`` on the cluster (which checks again, there).
"""

from __future__ import annotations

import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from morphsearch.errors import SearchError
from morphsearch.search.config import SearchConfig, load_config
from morphsearch.search.inputs import graph_path
from morphsearch.search.preflight import check_config

__all__ = ["AGENT_WAIT_S", "Submission", "entrypoint", "follow", "submit_job", "submit_search"]

_AGENT_STARTING = "No available agent to submit job"  # a head node still starting up
AGENT_WAIT_S = 60.0


@dataclass(frozen=True)
class Submission:
    """A submitted job: its id and the Jobs API client that submitted it."""

    job_id: str
    client: Any


def submit_search(
    config_path: str | Path,
    *,
    address: str,
    database: str | None = None,
    storage: str | None = None,
    name: str | None = None,
    seed: int | None = None,
    resume: bool = False,
) -> Submission:
    """Check the search ``config_path`` describes, then submit it as a Ray Job.

    Args:
        config_path: the search config YAML.
        address: the cluster's dashboard (Jobs API), e.g. ``http://HEAD:8265``.
        database, storage, name, seed: override the config's values (as ``search``'s
            ``--db``, ``--storage``, ``--name``, ``--seed``).
        resume: the job resumes the search ``name``.

    Raises:
        ConfigError, DatabaseUnreachable: what ``morphsearch search`` would refuse in
            the config itself (fields, morphisms, data, seed graph, a malformed database
            URL), raised before the cluster is contacted; the database, storage and name
            are checked by the job on the cluster.
        SearchError: the Jobs API cannot be reached.
    """
    config_path = Path(config_path)
    config = load_config(config_path).with_overrides(
        database=database, storage=storage, name=name, seed=seed
    )
    check_config(config, resume=resume, resources=False)  # the cluster checks its own
    client = _connect(address)
    command = entrypoint(config_path.name, database=database, storage=storage, name=name,
                         seed=seed, resume=resume)  # fmt: skip
    with _staged(config_path, config) as folder:
        job_id = submit_job(
            client,
            entrypoint=command,
            runtime_env={"working_dir": str(folder)},
            metadata={"morphsearch_search": config.name or "search"},
        )
    return Submission(job_id, client)


def entrypoint(
    config_name: str,
    *,
    database: str | None = None,
    storage: str | None = None,
    name: str | None = None,
    seed: int | None = None,
    resume: bool = False,
) -> str:
    """The job's command: ``morphsearch search`` on the cluster, with the overrides."""
    parts = ["python", "-m", "morphsearch", "search", config_name]
    for flag, value in (("--db", database), ("--storage", storage), ("--name", name),
                        ("--seed", seed)):  # fmt: skip
        if value is not None:
            parts += [flag, str(value)]
    parts += ["--address", "auto"]
    if resume:
        parts.append("--resume")
    return shlex.join(parts)


def _connect(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # ray raises ConnectionError / RuntimeError variants
        raise SearchError(
            f"cannot reach the Ray Jobs API at {address} ({type(exc).__name__}); "
            "pass the dashboard address http://HEAD:8265 (and RAY_AUTH_MODE=token if the "
            "cluster uses token authentication)"
        ) from None


@contextmanager
def _staged(config_path: Path, config: SearchConfig) -> Iterator[Path]:
    """A temporary job working dir: the config, plus the files it names by a path inside
    the folder it runs in (its seed graph, an ``npz`` dataset), each at that path."""
    with tempfile.TemporaryDirectory(prefix="morphsearch-job-") as name:
        folder = Path(name)
        shutil.copy(config_path, folder / config_path.name)
        files: list[tuple[str, Path]] = []
        if config.seed_graph.path is not None:
            where = graph_path(config.seed_graph.path, config.source)
            files.append((config.seed_graph.path, Path(where)))
        data = config.dataset.loader_options().get("path")
        if isinstance(data, str):
            files.append((data, Path(data)))
        for relative, found in files:
            # a path outside the working dir ("../x", "/x") is read there as given
            inside = not Path(relative).is_absolute() and ".." not in Path(relative).parts
            if inside and found.is_file():
                target = folder / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(found, target)
        yield folder


def submit_job(client: Any, **job: Any) -> str:
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


def follow(submission: Submission, out: TextIO | None = None) -> str:
    """Stream the job's logs to ``out`` (stdout) until it ends; its final status."""
    import asyncio

    stream = sys.stdout if out is None else out
    client, job_id = submission.client, submission.job_id

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            stream.write(lines)
            stream.flush()

    asyncio.run(tail())
    return str(client.get_job_status(job_id))
