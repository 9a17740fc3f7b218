"""The Optuna searcher of a search, with its study in an Optuna RDB storage.

The study lives in its own database, so ``optuna-dashboard`` can open it while the
search runs. That database is written at once, while Tune's snapshot of the searcher
is taken from time to time: after the driver is killed, the study can be ahead of the
restored searcher (a trial Tune resumes may already be finished in the study). The
searcher here accepts that instead of failing the resumed search.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from morphsearch.search.config import SearchConfig
from morphsearch.search.space import MorphismSpace

__all__ = ["ResumableOptunaSearch", "make_searcher", "optuna_storage_url"]

log = logging.getLogger(__name__)


class ResumableOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that ignores results for trials its study already finished."""

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            # the study recorded this trial before the driver died; Tune replays it
            log.info("trial %s is already finished in the Optuna study", trial_id)


def optuna_storage_url(config: SearchConfig, db_url: str) -> str | None:
    """Where the Optuna study lives.

    Optuna's RDB schema cannot share a database with lineage (both own tables named
    ``trials`` and ``alembic_version``), so a SQLite lineage file ``x.db`` gets its
    study in ``x.optuna.db`` beside it; other databases keep the study in the searcher's
    checkpoint unless ``optuna_storage`` names one.
    """
    if config.optuna_storage:
        return config.optuna_storage
    if db_url.startswith("sqlite:///") and db_url != "sqlite:///:memory:":
        path = Path(db_url.removeprefix("sqlite:///"))
        return "sqlite:///" + str(path.with_name(path.stem + ".optuna.db"))
    return None


def make_searcher(config: SearchConfig, name: str, space: MorphismSpace) -> OptunaSearch:
    """The searcher: TPE over ``space``, one or several objectives (Pareto)."""
    url = optuna_storage_url(config, config.database)
    storage = optuna.storages.RDBStorage(url) if url else None
    metrics = [o.metric for o in config.objectives]
    modes: list[str] = [o.mode for o in config.objectives]
    single = len(metrics) == 1
    return ResumableOptunaSearch(
        space=space,
        metric=metrics[0] if single else metrics,
        mode=modes[0] if single else modes,
        sampler=optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=4),
        study_name=name,
        storage=storage,
        seed=config.seed,
    )
