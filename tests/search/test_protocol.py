"""The trial hop: plans and reports survive Ray's dicts; the driver side needs no torch."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from morphsearch import artifacts, builders
from morphsearch.errors import SearchError
from morphsearch.search.protocol import (
    EpochReport,
    PlannedMorphism,
    TrialPlan,
    TrialReport,
)
from morphsearch.search.trial import TrialSetup
from tests.search.conftest import run_trial_here


def test_driver_side_modules_import_neither_torch_nor_the_worker() -> None:
    code = (
        "import sys; import morphsearch.search.protocol, morphsearch.search.callback, "
        "morphsearch.search.progress; "
        "bad = [m for m in ('torch', 'morphsearch.search.trainable', "
        "'morphsearch.search.trial') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plan_round_trips_through_rays_config() -> None:
    plan = TrialPlan("s/seed", "file:///w.safetensors", "abc",
                     PlannedMorphism("widen.split", "fc1", {"k": 3}, 11), "hash", 0.02,
                     "cosine", 11, False, True)  # fmt: skip
    config = {**plan.to_config(), "__trial_index__": 4}  # Ray adds keys of its own
    assert TrialPlan.from_config(config) == plan
    seed = replace(plan, morphism=None, child_structure_hash=None)
    assert TrialPlan.from_config(seed.to_config()) == seed


def test_report_round_trips_and_a_last_report_carries_the_kept_evaluation() -> None:
    def epoch(n: int, acc: float) -> EpochReport:
        return EpochReport(n, 10 * n, 1.0 / n, 0.5, acc, 0.4, 2.0, 100 * n)

    running = TrialReport(epoch(2, 0.8), "s/t", "s/seed", "u", "h", 10, 20,
                          history=(epoch(1, 0.7),))  # fmt: skip
    back = TrialReport.from_result(running.to_result())
    assert back == replace(running, final_params=10, final_flops=20)
    assert [r.epoch for r in back.evaluations] == [1, 2]
    # the last report: epochs 3 and 4 unreported, epoch 2 kept (reported before)
    last = replace(running, latest=epoch(2, 0.8), history=(epoch(3, 0.6), epoch(4, 0.7)),
                   weights_uri="w", final_arch_id="s/t", kept_epoch=2, last_epoch=4)
    result = last.to_result()
    assert result["epoch"] == 4 and result["val_accuracy"] == 0.8  # ASHA's time, kept value
    back = TrialReport.from_result(result)
    assert back.latest == epoch(2, 0.8) and [r.epoch for r in back.evaluations] == [3, 4]


def _setup(tmp_path: Path, **fields: object) -> TrialSetup:
    base: dict[str, object] = {
        "search": "s", "artifacts_uri": str(tmp_path / "art"), "dataset": "digits",
        "dataset_options": (("image", False),), "data_seed": 0, "batch_size": 64, "steps": 12,
        "eval_every": 4, "checkpoint_every_s": 1e9, "monitor": "val_accuracy",
        "monitor_mode": "max", **fields,
    }
    return TrialSetup(**base)  # type: ignore[arg-type]


def _plan(tmp_path: Path, **fields: object) -> TrialPlan:
    parent = builders.mlp([64, 8, 10], seed=3)
    ref = artifacts.write_architecture(parent, str(tmp_path), "parent")
    return replace(TrialPlan("p", ref.uri, ref.sha256, lr=0.02), **fields)  # type: ignore[arg-type]


def test_a_trial_keeps_and_reports_its_best_evaluation(tmp_path: Path) -> None:
    from morphsearch.data import load_dataset
    from morphsearch.growth.trainer import evaluate

    reports = run_trial_here(_plan(tmp_path, lr=0.05), _setup(tmp_path, steps=40, eval_every=2))
    accs = [r["val_accuracy"] for r in reports[:-1]]
    last = reports[-1]
    import json

    accs += [h["val_accuracy"] for h in json.loads(last.get("epoch_history") or "[]")
             if h["epoch"] > len(accs)]
    assert len(accs) == 20 and last["epoch"] == 20
    assert last["val_accuracy"] == max(accs) and last["kept_epoch"] == accs.index(max(accs)) + 1
    kept = artifacts.read_architecture(last["weights_uri"])
    import torch

    data = load_dataset("digits", seed=0, image=False)
    _, acc = evaluate(kept.to_module(), data, "val", device=torch.device("cpu"))
    assert acc == max(accs)  # the saved weights are the ones ranked


def test_bf16_trains_on_cpu(tmp_path: Path) -> None:
    reports = run_trial_here(_plan(tmp_path), _setup(tmp_path, precision="bf16"))
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    assert reports[-1]["val_accuracy"] > 0.3  # it learns (10 classes: chance is 0.1)


def test_a_child_unlike_its_plan_is_refused(tmp_path: Path) -> None:
    plan = _plan(tmp_path, morphism=PlannedMorphism("widen.random", "fc1", {"k": 2}),
                 child_structure_hash="0" * 64)
    with pytest.raises(SearchError, match="not the planned 000000000000"):
        run_trial_here(plan, _setup(tmp_path))


class _Checkpointing:
    """A session that keeps every checkpoint folder (Tune would upload it)."""

    trial_id = "t0"

    def __init__(self, root: Path, start: Path | None = None) -> None:
        self.root, self.start = root, start
        self.reports: list[dict[str, object]] = []
        self.folders: list[Path] = []

    def checkpoint_dir(self) -> Path | None:
        return self.start

    def report(self, result: dict[str, object], folder: Path | None) -> None:
        import shutil

        self.reports.append(result)
        if folder is not None:
            kept = self.root / f"ckpt{len(self.reports)}"
            shutil.copytree(folder, kept)
            self.folders.append(kept)

    def node_id(self) -> str | None:
        return None


def test_a_restored_trial_continues_where_it_stopped(tmp_path: Path) -> None:
    from morphsearch.search.trial import run_trial

    plan = _plan(tmp_path, morphism=PlannedMorphism("widen.random", "fc1", {"k": 2}, 3),
                 trial_seed=3)  # fmt: skip
    setup = _setup(tmp_path, steps=12, eval_every=3, checkpoint_every_s=0.0)
    whole = _Checkpointing(tmp_path / "a")
    run_trial(plan, setup, whole)
    assert [r["epoch"] for r in whole.reports] == [1, 2, 3, 4] and len(whole.folders) == 3
    resumed = _Checkpointing(tmp_path / "b", start=whole.folders[1])  # after epoch 2
    # a fresh storage folder: the finished trial's own would say it is done (below)
    run_trial(plan, replace(setup, artifacts_uri=str(tmp_path / "art-b")), resumed)
    assert [r["epoch"] for r in resumed.reports] == [3, 4]
    # the same batches and optimizer state: the same numbers as the uninterrupted run
    for key in ("val_loss", "train_loss", "step", "kept_epoch", "weights_hash"):
        assert resumed.reports[-1][key] == whole.reports[-1][key]


def test_the_growth_config_is_typed_to_the_loop_and_k_goes_where_it_is_taken() -> None:
    from morphsearch.growth import GradMaxScore, ScoreThreshold
    from morphsearch.search.config import TrialGrowthConfig
    from morphsearch.search.growing import loop_config

    common = {"steps": 100, "lr": 0.01, "schedule": "cosine", "batch_size": 32, "seed": 1,
              "device": "cpu", "precision": "bf16"}  # fmt: skip
    off = loop_config(TrialGrowthConfig(), **common)  # type: ignore[arg-type]
    assert off.trigger is None and off.precision == "bf16" and off.lr_schedule == "cosine"
    growth = TrialGrowthConfig(enabled=True, trigger="score", scorer="gradmax", tau=0.5,
                               check_every=7, morphism="widen.random", k=3, max_events=2)
    on = loop_config(growth, **common)  # type: ignore[arg-type]
    assert isinstance(on.trigger, ScoreThreshold) and on.trigger.tau == 0.5
    assert on.trigger.check_every == 7 and isinstance(on.scorer, GradMaxScore)
    assert on.morphism_params == {"widen.random": {"k": 3}} and on.max_growths == 2
    deepen = loop_config(growth.model_copy(update={"morphism": "deepen.identity"}), **common)  # type: ignore[arg-type]
    assert deepen.morphism_params == {}  # deepen.identity takes no k


def test_the_test_split_scores_the_validation_front_too() -> None:
    from morphsearch.lineage.records import BestResult
    from morphsearch.search.holdout import _front

    def r(arch: str, params: int, value: float) -> BestResult:
        return BestResult(arch, "t", "val_accuracy", value, 1, params, 0)

    ranked = [r("big", 900, 0.95), r("mid", 500, 0.93), r("worse", 600, 0.90),
              r("small", 100, 0.80), r("tied", 500, 0.93)]
    assert [p.arch_id for p in _front(ranked, "max")] == ["small", "mid", "big"]
    assert [p.arch_id for p in _front(ranked, "min")] == ["small"]


def test_a_finished_trial_started_again_reports_its_result_without_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a driver killed after a trial ended but before Tune's snapshot knew it: the resumed
    # Tuner starts that trial again (same id, same plan); it must not train a second time
    from morphsearch.search import trial as trial_module
    from tests.search.conftest import FakeSession

    plan = _plan(tmp_path, morphism=PlannedMorphism("widen.random", "fc1", {"k": 2}, 3),
                 trial_seed=3)  # fmt: skip
    setup = _setup(tmp_path, steps=8, eval_every=4)
    first = FakeSession()
    trial_module.run_trial(plan, setup, first)
    assert len(first.reports) == 2 and first.reports[-1]["weights_uri"]

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished trial was trained again")

    with monkeypatch.context() as patch:
        patch.setattr(trial_module, "GrowingTrainer", no_training)
        again = FakeSession()
        trial_module.run_trial(plan, setup, again)
    assert again.reports == [first.reports[-1]]
    # another plan under the same trial id (a new search in the same storage) trains
    other = FakeSession()
    trial_module.run_trial(replace(plan, lr=0.05), setup, other)
    assert len(other.reports) == 2 and other.reports[-1] != first.reports[-1]


def test_a_setting_added_later_at_its_default_keeps_a_finished_trials_identity(
    tmp_path: Path,
) -> None:
    # a search resumed by a newer version, whose TrialSetup has one more field at a
    # default that keeps the old behaviour: its finished trials are still its own; a
    # setting that differs makes another trial
    from dataclasses import make_dataclass

    from morphsearch.search.trial import TrialSetup, _trial_identity

    plan = _plan(tmp_path)
    setup = _setup(tmp_path, steps=8, eval_every=4)
    newer_type = make_dataclass("NewerSetup", [("later", int, 0)], bases=(TrialSetup,),
                                frozen=True)
    newer = newer_type(**{f: getattr(setup, f) for f in setup.__dataclass_fields__})
    assert _trial_identity(plan, newer) == _trial_identity(plan, setup)
    assert _trial_identity(plan, replace(newer, later=1)) != _trial_identity(plan, setup)
    assert _trial_identity(plan, replace(setup, steps=9)) != _trial_identity(plan, setup)


def test_the_searcher_waits_while_trials_run_when_nothing_new_can_grow(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a space with nothing new to grow from the second suggestion on: while a trial runs
    # (it may add a parent) that is a wait; with none running it is the search's end
    import optuna
    from ray.tune.search import Searcher

    from morphsearch.search.searcher import ResumableOptunaSearch
    from morphsearch.search.space import PoolExhausted

    exhausted = {"now": False, "asked": 0}

    def space(trial: optuna.Trial) -> None:
        exhausted["asked"] += 1
        trial.suggest_float("lr", 1e-3, 1e-2, log=True)
        if exhausted["now"]:
            raise PoolExhausted("nothing new to grow")

    searcher = ResumableOptunaSearch(space=space, metric="val_accuracy", mode="max")
    assert searcher.suggest("t1") is not None  # t1 runs
    exhausted["now"] = True
    assert searcher.suggest("t2") is None  # t1 may add a parent: wait
    states = [t.state for t in searcher._ot_study.get_trials()]
    assert states == [optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL]
    # Tune asks again every loop: no new parent until a trial ends, so no new question
    assert [searcher.suggest(f"w{i}") for i in range(5)] == [None] * 5
    assert exhausted["asked"] == 2 and len(searcher._ot_study.get_trials()) == 2
    searcher.on_trial_complete("t1", {"val_accuracy": 0.5, "training_iteration": 1})
    # nothing running and nothing to grow: the end of the search, not an error
    with caplog.at_level(logging.WARNING, logger="morphsearch.search.searcher"):
        assert searcher.suggest("t3") == Searcher.FINISHED
    states = [t.state for t in searcher._ot_study.get_trials()]
    assert states == [optuna.trial.TrialState.COMPLETE] + [optuna.trial.TrialState.FAIL] * 2
    said = [r.getMessage() for r in caplog.records if r.name == "morphsearch.search.searcher"]
    assert said == ["nothing new to grow; the search ends after 1 trial(s), before its budget"]
