"""The Optuna searcher of a search, with its study in an Optuna RDB storage.

The study lives in its own database, so ``optuna-dashboard`` can open it while the
search runs. That database is written at once, while Tune's snapshot of the searcher
is taken from time to time: after the driver is killed, the study can be ahead of the
restored searcher (a trial Tune resumes may already be finished in the study). The
searcher here accepts that instead of failing the resumed search.

The other way round, lineage can be ahead of the snapshot: a trial suggested and
finished after the last snapshot is in lineage but unknown to the restored Tune. The
restored searcher counts such trials against ``budget.trials``, so a resumed search
runs no replacement for them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from morphsearch.search.config import SearchConfig
from morphsearch.search.space import MorphismSpace, PoolExhausted

__all__ = ["ResumableOptunaSearch", "make_searcher", "optuna_storage_url"]

log = logging.getLogger(__name__)


class ResumableOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that ignores results for trials its study already finished and,
    with ``wait_for_seed``, suggests nothing more while the seed trial trains: children
    then fine-tune a seed trained to its full budget instead of starting from its
    untrained weights."""

    wait_for_seed = False
    _seed_trial: str | None = None
    _exhausted_at: int | None = None  # completed trials when the pool last had nothing new
    # lineage's trials this searcher never suggested (None: to be read after a restore)
    _lost: frozenset[str] | None = frozenset()

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self._lost = None  # read from lineage on the first suggestion

    def suggest(self, trial_id: str) -> dict[Any, Any] | None:
        if self._lost is None:
            self._lost = self._lost_trials()
        if self._lost and len(self._ot_trials) + len(self._lost) >= self._budget():
            # the lost trials ran: they were part of the budget (Ray types suggest() as a
            # dict or None, yet reads this string as the end of the search)
            return Searcher.FINISHED  # type: ignore[return-value]
        if self.wait_for_seed and self._seed_trial is not None:
            return None  # Tune asks again on its next loop
        if self._exhausted_at == len(self._completed_trials) and self._running():
            return None  # nothing new since the pool ran dry: only a finished trial adds parents
        try:
            config = super().suggest(trial_id)
        except PoolExhausted as exc:
            # nothing new to grow yet: while trials run (each may add a parent), wait;
            # the Optuna trial asked for this suggestion is closed as failed (TPE skips it)
            asked = self._ot_trials.pop(trial_id, None)
            if asked is not None and self._ot_study is not None:
                self._ot_study.tell(asked, state=optuna.trial.TrialState.FAIL)
            if not self._running():
                # nothing runs that could add a parent to the pool: the search ends here,
                # as at the end of its budget (its trials recorded and scored on test,
                # its best exportable), and says why (Tune asks no more after FINISHED)
                ran = len(self._completed_trials) + len(self._lost or ())
                log.warning("%s; the search ends after %d trial(s), before its budget",
                            exc, ran)  # fmt: skip
                return Searcher.FINISHED  # type: ignore[return-value]  # as above
            self._exhausted_at = len(self._completed_trials)
            return None
        self._exhausted_at = None
        if self.wait_for_seed and isinstance(config, dict) and config.get("morphism") is None:
            self._seed_trial = trial_id
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id == self._seed_trial:
            self._seed_trial = None  # trained (or failed: its children then train fully)
        super().on_trial_complete(trial_id, result, error)

    def _budget(self) -> int:
        """``budget.trials``, from the space's config (``_lost`` is only ever non-empty
        with a :class:`MorphismSpace`)."""
        return int(self._space.config.budget.trials)  # type: ignore[union-attr]

    def _lost_trials(self) -> frozenset[str]:
        """Trials lineage recorded after the snapshot this searcher was restored from."""
        space = self._space
        if not isinstance(space, MorphismSpace):
            return frozenset()
        lost = frozenset(space.store.trial_statuses(space.search)) - set(self._ot_trials)
        if lost:
            log.info("resume: %d trial(s) finished after Tune's last snapshot: %s",
                     len(lost), ", ".join(sorted(lost)))  # fmt: skip
        return lost

    def _running(self) -> bool:
        return bool(set(self._ot_trials) - self._completed_trials)

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
    searcher = ResumableOptunaSearch(
        space=space,
        metric=metrics[0] if single else metrics,
        mode=modes[0] if single else modes,
        sampler=optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=4),
        study_name=name,
        storage=storage,
        seed=config.seed,
    )
    searcher.wait_for_seed = config.selection.seed_first and config.selection.inherit_weights
    return searcher
