"""Shared pieces of the search tests: a tiny digits config and a local Ray."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from morphsearch.search.config import SearchConfig

TINY = {
    "seed": 0,
    "seed_graph": {"builder": "mlp", "hidden": [6]},
    "dataset": {"name": "digits"},
    "objectives": [{"metric": "val_accuracy", "mode": "max"}],
    "budget": {"trials": 5, "max_concurrent": 2, "epochs_per_trial": 2, "batch_size": 64},
    "morphisms": {
        "widen.random": {"k": [2, 8]},
        "widen.split": {"k": [2, 8]},
        "deepen.identity": {},
    },
    "selection": {"pool_size": 2, "lr": [0.005, 0.02]},
    "resources": {"cpus": 1},
}


def tiny_config_file(tmp_path: Path, **changes: Any) -> Path:
    """``TINY`` as ``tmp_path/tiny.yaml``, with its lineage and runs under ``tmp_path``;
    ``changes`` replace top-level fields."""
    import yaml

    data = {
        **TINY,
        "name": "tiny",
        "database": f"sqlite:///{tmp_path}/lineage.db",
        "storage": str(tmp_path / "runs"),
        **changes,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def tiny_config(tmp_path: Path, name: str = "tiny", **budget: int) -> SearchConfig:
    data = {
        **TINY,
        "name": name,
        "database": f"sqlite:///{tmp_path}/lineage.db",
        "storage": str(tmp_path / "runs"),
    }
    data["budget"] = {**TINY["budget"], **budget}
    return SearchConfig.model_validate(data)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    import ray

    if ray.is_initialized():  # a search run by an earlier module leaves its Ray up
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def refuse_cluster(monkeypatch: pytest.MonkeyPatch, why: str) -> None:
    """Starting Ray or making a Jobs API client fails the test with ``why``: for tests
    that every check comes before the cluster is touched."""
    import ray
    import ray.job_submission

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        # pytest.fail, not AssertionError: the code under test turns any Exception from
        # ray.init or the Jobs client into its own exit-2 line, which would hide this
        pytest.fail(why)

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", refuse)


class FakeSession:
    """A trial's session without Ray: reports go to a list (checkpoints are dropped)."""

    trial_id = "t0"

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    def checkpoint_dir(self) -> Path | None:
        return None

    def report(self, result: dict[str, Any], folder: Path | None) -> None:
        self.reports.append(result)

    def node_id(self) -> str | None:
        return None


def run_trial_here(plan: Any, setup: Any) -> list[dict[str, Any]]:
    """Run one trial in this process; its Ray results, in order."""
    from morphsearch.search.trial import run_trial

    session = FakeSession()
    run_trial(plan, setup, session)
    return session.reports

def digits_space(tmp_path: Path, **morphisms_: Any) -> Any:
    """A MorphismSpace over TINY (``morphisms_`` replace its morphisms) with a digits
    probe batch and an MLP seed; returns ``(space, seed)``."""
    from morphsearch import builders
    from morphsearch.data import load_dataset
    from morphsearch.search.space import MorphismSpace, ParentInfo

    data = {**TINY, "morphisms": morphisms_ or TINY["morphisms"]}
    config = SearchConfig.model_validate(data)
    digits = load_dataset("digits", seed=0, image=False)
    seed = builders.mlp([64, 16, 10], activation="tanh", seed=0)
    info = ParentInfo("s/seed", "unused", None, seed.to_json())
    probe = (digits.x_train[:32], digits.y_train[:32])
    return MorphismSpace(config, "s", f"sqlite:///{tmp_path}/x.db", probe, info), seed


def load_config_text(tmp_path: Path, extra: str) -> SearchConfig:
    """TINY without its selection, plus the YAML ``extra``, loaded as a user's file."""
    import yaml

    from morphsearch.search.config import load_config

    base = yaml.safe_dump({k: v for k, v in TINY.items() if k != "selection"})
    path = tmp_path / "c.yaml"
    path.write_text(base + extra + "\n")
    return load_config(path)
