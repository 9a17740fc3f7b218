"""The lineage callback records when each trial started (the ``started`` column)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from morphsearch import artifacts, builders
from morphsearch.lineage import ArchitectureIn, open_store
from morphsearch.search.callback import LineageCallback


def test_started_is_recorded_and_survives_a_snapshot(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lineage.db'}"
    seed, child = builders.mlp([4, 3, 2]), builders.mlp([4, 5, 2])
    with open_store(url, write=True) as store:
        store.create_search("s", {})
        store.record_seed("s", ArchitectureIn("s/seed", seed.to_json(), seed.structure_hash,
                                              seed.num_params, seed.flops))  # fmt: skip
    ref = artifacts.write_architecture(child, str(tmp_path / "runs"), "t1")
    trial = SimpleNamespace(trial_id="t1", config={"lr": 0.01})
    callback = LineageCallback(url, "s")
    before = datetime.now(UTC)
    callback.on_trial_start(0, [], trial)
    restored = LineageCallback(url, "s")  # the driver died; Tune restores the callback
    restored.set_state(callback.get_state())
    restored.on_trial_start(0, [], trial)  # the resumed run keeps the first start time
    result = {
        "arch_id": "s/t1", "parent_id": "s/seed", "child_uri": ref.uri,
        "weights_uri": ref.uri, "weights_sha256": ref.sha256,
        "weights_hash": child.weights_hash, "structure_hash": child.structure_hash,
        "child_params": child.num_params, "child_flops": child.flops,
        "morphisms": "[]", "epoch": 1, "val_accuracy": 0.5,
    }  # fmt: skip
    restored.on_trial_result(1, [], trial, result)
    restored.on_trial_complete(1, [], trial)
    restored.on_experiment_end([])
    with open_store(url) as store:
        record = store.trial("t1")
    assert record.started is not None and before <= record.started <= datetime.now(UTC)
    assert record.ended is not None and record.started <= record.ended
