"""Trials report to Tune less often than every epoch, and lineage still gets every epoch."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from morphsearch.search.runner import run_search
from tests.search.conftest import tiny_config

pytestmark = pytest.mark.slow


def _reports_per_trial(experiment: Path) -> dict[str, list[dict[str, object]]]:
    """Tune's own record of each trial's reports (one JSON line per report)."""
    out = {}
    for path in experiment.glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        out[str(rows[0]["trial_id"])] = rows
    return out


def _epochs_in_lineage(db: Path) -> dict[str, list[int]]:
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "select t.trial_id, m.evaluation from metrics m join trials t on t.id = m.trial_id "
            "where m.name = 'train_loss' order by t.trial_id, m.evaluation"
        ).fetchall()
    out: dict[str, list[int]] = {}
    for trial, evaluation in rows:
        out.setdefault(trial, []).append(evaluation)
    return out


@pytest.mark.parametrize("every, reports", [(0.0, 4), (3600.0, 1)])
def test_every_epoch_reaches_lineage_however_often_trials_report(
    tmp_path: Path, local_ray: None, every: float, reports: int
) -> None:
    base = tiny_config(tmp_path, trials=2, epochs_per_trial=4)
    budget = {**base.budget.model_dump(), "report_every_s": every, "child_epochs": 4,
              "patience": None}
    config = base.model_validate({**base.model_dump(), "budget": budget})
    run_search(config)

    tune_reports = _reports_per_trial(tmp_path / "runs" / "tiny")
    assert len(tune_reports) == 2
    for rows in tune_reports.values():
        assert len(rows) == reports  # every epoch, or only the last one
        assert rows[-1]["epoch"] == 4
    # lineage has all four epochs of both trials either way
    assert _epochs_in_lineage(tmp_path / "lineage.db") == {t: [1, 2, 3, 4] for t in tune_reports}


@pytest.mark.parametrize("grace, rf, epochs", [(1, 2, 4), (1, 3, 10), (2, 2, 9), (3, 3, 20)])
def test_asha_milestones_are_rays_rungs(grace: int, rf: int, epochs: int) -> None:
    from ray.tune.schedulers import ASHAScheduler

    from morphsearch.search.runner import asha_milestones

    base = tiny_config(Path("/tmp"), epochs_per_trial=epochs)
    config = base.model_validate({**base.model_dump(), "scheduler": {
        "asha": True, "grace_period": grace, "reduction_factor": rf}})
    scheduler = ASHAScheduler(time_attr="epoch", metric="val_accuracy", mode="max",
                              max_t=epochs, grace_period=grace, reduction_factor=rf)
    rungs = sorted(milestone for milestone, _ in scheduler._brackets[0]._rungs)
    assert list(asha_milestones(config, epochs)) == rungs
    assert asha_milestones(base, epochs) == ()  # no ASHA, nothing forced
    # a step budget: the rungs follow its evaluations, not the (unused) epochs
    steps = config.model_validate({**config.model_dump(), "budget": {
        **{k: v for k, v in config.budget.model_dump(exclude_unset=True).items()
           if "epoch" not in k}, "steps_per_trial": 40 * epochs, "eval_every_steps": 20}})
    scheduler = ASHAScheduler(time_attr="epoch", metric="val_accuracy", mode="max",
                              max_t=2 * epochs, grace_period=grace, reduction_factor=rf)
    rungs = sorted(milestone for milestone, _ in scheduler._brackets[0]._rungs)
    assert list(asha_milestones(steps, steps.budget.evaluations(1000))) == rungs


def test_asha_sees_every_rung_when_reports_are_batched(tmp_path: Path, local_ray: None) -> None:
    base = tiny_config(tmp_path, trials=3, epochs_per_trial=4)
    budget = {**base.budget.model_dump(), "report_every_s": 3600.0, "child_epochs": 4,
              "patience": None}
    scheduler = {"asha": True, "grace_period": 1, "reduction_factor": 2}
    config = base.model_validate({**base.model_dump(), "budget": budget,
                                  "scheduler": scheduler})
    run_search(config)
    reports = _reports_per_trial(tmp_path / "runs" / "tiny")
    lineage = _epochs_in_lineage(tmp_path / "lineage.db")
    for trial, rows in reports.items():
        last = rows[-1]["epoch"]
        # every rung (1, 2, 4) the trial reached was reported at that epoch, nothing else
        assert [r["epoch"] for r in rows] == [e for e in (1, 2, 4) if e <= last]
        assert lineage[trial] == list(range(1, int(last) + 1))  # type: ignore[call-overload]
