"""A trial that finished after Tune's last snapshot: lineage has it, the restored Tune
does not. The resumed search closes its row, counts it in the progress and spends no
budget on a replacement.

``test_resume.py`` kills a real driver, where this happens only when the kill lands in
the window between the lineage write and Tune's next snapshot; here the two states are
built directly, so the path runs every time.
"""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ray.tune.search import Searcher

from morphsearch import artifacts, builders
from morphsearch.lineage import ArchitectureIn, open_store
from morphsearch.search.callback import LineageCallback
from morphsearch.search.progress import SearchProgress
from morphsearch.search.searcher import make_searcher
from tests.search.conftest import digits_space


def _final_result(tmp_path: Path, trial_id: str) -> dict[str, Any]:
    child = builders.mlp([4, 5, 2])
    ref = artifacts.write_architecture(child, str(tmp_path / "runs"), trial_id)
    return {
        "arch_id": f"s/{trial_id}", "parent_id": "s/seed", "child_uri": ref.uri,
        "weights_uri": ref.uri, "weights_sha256": ref.sha256,
        "weights_hash": child.weights_hash, "structure_hash": child.structure_hash,
        "child_params": child.num_params, "child_flops": child.flops,
        "morphisms": "[]", "epoch": 2, "val_accuracy": 0.5,
    }  # fmt: skip


def test_resume_closes_the_lineage_rows_of_trials_tune_lost(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lineage.db'}"
    seed = builders.mlp([4, 3, 2])
    with open_store(url, write=True) as store:
        store.create_search("s", {})
        store.record_seed("s", ArchitectureIn("s/seed", seed.to_json(), seed.structure_hash,
                                              seed.num_params, seed.flops))  # fmt: skip
    first = LineageCallback(url, "s")
    snapshot = first.get_state()  # Tune's last snapshot: taken before either trial ran
    for trial_id in ("lost", "known"):
        trial = SimpleNamespace(trial_id=trial_id, config={"lr": 0.01})
        first.on_trial_start(0, [], trial)
        first.on_trial_result(1, [], trial, _final_result(tmp_path, trial_id))
    first.on_experiment_end([])  # then the driver is killed: both rows stay RUNNING

    progress = SearchProgress("val_accuracy", total=4, stream=io.StringIO())
    restored = LineageCallback(url, "s", progress=progress)
    restored.set_state(snapshot)
    tune_trials = [SimpleNamespace(trial_id="known")]  # Tune restored only this one
    restored.on_step_begin(0, tune_trials)
    restored.on_step_begin(1, tune_trials)  # once per restore, not every step
    with open_store(url) as store:
        assert store.trial_statuses("s") == {"lost": "TERMINATED", "known": "RUNNING"}
        assert store.trial("lost").ended is not None
    assert (progress.state.done, progress.state.errored) == (1, 0)
    progress.state.reconcile(["TERMINATED"])  # Tune's final list: "known" only
    assert progress.state.done == 2  # agrees with lineage's two finished trials
    restored.on_experiment_end([])

    # a callback pickled by an older version (no progress attribute) still resumes
    with open_store(url, write=True) as store:
        store.update_trial("lost", "RUNNING")  # as before the first resume
    older = LineageCallback(url, "s")
    del older.__dict__["progress"]  # the reconcile flag is a class attribute already
    older.set_state(snapshot)
    older.on_step_begin(0, tune_trials)
    older.on_experiment_end([])
    with open_store(url) as store:
        assert store.trial_statuses("s")["lost"] == "TERMINATED"
    state = SearchProgress("val_accuracy", stream=io.StringIO()).state
    state.reconcile(["TERMINATED", "ERROR"])  # no carry() ever called: the class default
    assert (state.done, state.errored) == (1, 1)


class _Lineage:
    """What the space reads from lineage: no trained parent yet, and one trial."""

    def __init__(self, trials: dict[str, str]) -> None:
        self.trials = trials

    def best(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []

    def child_hashes(self, arch_id: str) -> set[str]:
        return set()

    def trial_statuses(self, search: str) -> dict[str, str]:
        return dict(self.trials)


def test_restored_searcher_counts_lost_trials_against_the_budget(tmp_path: Path) -> None:
    space, _ = digits_space(tmp_path)
    space.config = space.config.model_copy(
        update={"budget": space.config.budget.model_copy(update={"trials": 3})}
    )
    searcher = make_searcher(space.config, "s", space)
    searcher.set_search_properties("val_accuracy", "max", {})
    state = tmp_path / "searcher.pkl"
    searcher.save(str(state))  # snapshot before any suggestion

    searcher.restore(str(state))
    searcher._space._store = _Lineage({"lost": "TERMINATED"})  # ran after the snapshot
    searcher.wait_for_seed = False  # children are suggested while the seed trains
    first = searcher.suggest("a")
    second = searcher.suggest("b")
    assert isinstance(first, dict) and isinstance(second, dict)
    assert searcher.suggest("c") == Searcher.FINISHED  # 2 suggested + 1 lost = budget

    fresh = make_searcher(space.config, "s", space)  # not restored: lineage is not read
    fresh.set_search_properties("val_accuracy", "max", {})
    fresh._space._store = _Lineage({"x": "TERMINATED", "y": "TERMINATED", "z": "TERMINATED"})
    assert isinstance(fresh.suggest("a"), dict)
