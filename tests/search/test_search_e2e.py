"""End to end on digits: a small search writes the lineage a user would query."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import optuna
import pytest

from morphsearch import artifacts
from morphsearch.lineage import LineageStore
from morphsearch.search.holdout import _front
from morphsearch.search.runner import run_search
from tests.search.conftest import tiny_config

pytestmark = pytest.mark.slow


def _metrics(db: Path) -> dict[str, dict[tuple[str, int], float]]:
    out: dict[str, dict[tuple[str, int], float]] = {}
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "select t.trial_id, m.name, m.evaluation, m.value from metrics m "
            "join trials t on t.id = m.trial_id"
        )
        for trial, name, evaluation, value in rows:
            out.setdefault(trial, {})[(name, evaluation)] = value
    return out


def test_search_on_digits(tmp_path: Path, local_ray: None) -> None:
    config = tiny_config(tmp_path, trials=5)
    result = run_search(config)
    assert result.trials == 5
    store = LineageStore(config.database)
    summary = store.summary("tiny")
    assert summary.n_trials == 5 and summary.trials_by_status == {"TERMINATED": 5}
    assert summary.n_architectures == 6  # the seed and one child per trial

    # every child descends from the seed through recorded morphisms
    tree = store.descendants("tiny/seed")
    assert len(tree) == 6
    grown = [n for n in tree[1:] if n.morphisms]
    assert len(grown) == 4  # all but the trial that trained the seed as it is
    assert all(m["name"] in config.morphisms for n in grown for m in n.morphisms)

    # inheritance: a child's loss before training = its parent's loss after training
    metrics = _metrics(tmp_path / "lineage.db")
    by_arch = {n.arch_id: n for n in tree}
    checked = 0
    for node in tree[1:]:
        parent = by_arch[node.parent_id] if node.parent_id else None
        if parent is None or parent.trial_id is None:
            continue  # grown from the untrained seed
        child_first = metrics[node.trial_id][("first_batch_loss", 1)]
        # the parent's kept weights: its best epoch by val_accuracy (the first of ties)
        scores = {b: v for (name, b), v in metrics[parent.trial_id].items()
                  if name == "val_accuracy"}
        kept = min(b for b, v in scores.items() if v == max(scores.values()))
        parent_final = metrics[parent.trial_id][("final_loss", kept)]
        assert child_first == pytest.approx(parent_final, rel=1e-4, abs=1e-5)
        checked += 1
    assert checked == 4  # every child: the seed trains before any child is suggested

    # the search improved on the seed trained alone
    assert result.seed_value is not None and result.best_value is not None
    assert result.best_value > result.seed_value

    # the best child's weights are on storage and verify
    best = store.architecture(result.best_arch_id or "")
    arch = artifacts.read_architecture(best.weights_uri or "", best.weights_sha256)
    assert arch.structure_hash == best.structure_hash
    assert len(metrics) == 5
    store.close()

    # the Optuna study is persisted beside lineage, where optuna-dashboard can open it
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/lineage.optuna.db")
    assert len(study.trials) == 5
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_growth_inside_trials(tmp_path: Path, local_ray: None) -> None:
    base = tiny_config(tmp_path, name="growing", trials=2)
    growth = {
        "enabled": True,
        "trigger": "schedule",
        "morphism": "widen.random",
        "k": 2,
        "max_events": 1,
    }
    config = base.model_validate({**base.model_dump(), "growth": growth})
    run_search(config)
    with LineageStore(config.database) as store:
        tree = store.descendants("growing/seed")
        grown = [n for n in tree if n.kind == "growth"]
        assert len(grown) == 2  # one growth event in each trial
        for node in grown:
            record = store.architecture(node.arch_id)
            assert record.weights_uri is not None  # the grown network carries the weights
            assert node.morphisms[0]["name"] == "widen.random"
            parent = store.architecture(node.parent_id or "")
            assert record.params > parent.params and parent.weights_uri is None


def test_growth_with_asha_keeps_the_best_weights_and_scores_the_top_on_test(
    tmp_path: Path, local_ray: None
) -> None:
    import torch

    from morphsearch.data import load_dataset
    from morphsearch.export import export_from_store
    from morphsearch.growth.trainer import evaluate

    base = tiny_config(tmp_path, name="ashagrow", trials=3, epochs_per_trial=4)
    config = base.model_validate({
        **base.model_dump(),
        "budget": {**base.budget.model_dump(), "patience": None, "child_epochs": 4},
        "growth": {"enabled": True, "trigger": "schedule", "morphism": "widen.random",
                   "max_events": 1},
        "scheduler": {"asha": True, "grace_period": 1, "reduction_factor": 2},
        "selection": {**base.selection.model_dump(), "test_top": 2},
    })
    run_search(config)
    data = load_dataset("digits", seed=0)
    with LineageStore(config.database) as store:
        assert store.summary("ashagrow").n_trials == 3
        assert [n for n in store.descendants("ashagrow/seed") if n.kind == "growth"]
        ranked = store.best("ashagrow", "val_accuracy", "max", k=3)
        best = ranked[0]
        # the exported weights score exactly what lineage ranks the architecture by
        out = export_from_store(tmp_path / "export", db=config.database, search="ashagrow",
                                formats=("safetensors",)).out
        assert best.arch_id in (out / "MODEL_CARD.md").read_text()
        assert "test_accuracy (scored once" in (out / "MODEL_CARD.md").read_text()
        from morphsearch.export import load_module

        _, val_acc = evaluate(load_module(out), data, "val", device=torch.device("cpu"))
        assert val_acc == pytest.approx(best.value, abs=1e-12)
        # refit: the same graph trained again on train + val; the card gives its own
        # test score, which the exported weights reproduce
        refit = export_from_store(tmp_path / "refit", db=config.database, search="ashagrow",
                                  formats=("safetensors",), refit=True, refit_steps=30).out
        card = (refit / "MODEL_CARD.md").read_text()
        _, test_acc = evaluate(load_module(refit), data, "test", device=torch.device("cpu"))
        assert "## Refit" in card and "(1,438 samples): 30 Adam steps" in card
        assert "**The exported weights are a refit**" in card
        from morphsearch.export import load_architecture

        exported = load_architecture(refit)
        assert f"| exported weights hash (refit) | `{exported.weights_hash}` |" in card
        assert f"accuracy {test_acc:.4f}" in card
        assert load_module(refit).state_dict().keys() == load_module(out).state_dict().keys()
        # the top 2 by validation were scored once on the test split, and the members of
        # the validation-vs-parameters front; no other architecture
        front = {r.arch_id for r in _front(ranked, "max")}
        for rank, result in enumerate(ranked):
            names = {m.name for m in store.metrics(result.trial_id)
                     if m.arch_id == result.arch_id}
            assert ("test_accuracy" in names) == (rank < 2 or result.arch_id in front)


def test_a_search_that_runs_out_of_children_ends_as_finished(
    tmp_path: Path, local_ray: None, caplog: pytest.LogCaptureFixture
) -> None:
    # The seed MLP 64:6:10 (460 parameters) may only widen its hidden layer by 1 or 2
    # units (75 parameters each), up to 610 parameters: hidden 7 or 8. The novel children
    # are seed -> 7, seed -> 8 and 7 -> 8 (8 has no room left), so after the trial that
    # trains the seed and those three the pool is dry, well before 10 trials. All three
    # are grown because two trials run at once (both children of the trained seed start
    # when it ends) and the pool holds two parents (7 ranks in the top two, so 7 -> 8
    # follows); one at a time, or a pool of one, could end the search a trial sooner.
    base = tiny_config(tmp_path, name="dry", trials=10)
    config = base.model_validate({
        **base.model_dump(),
        "morphisms": {"widen.random": {"k": [1, 2]}},
        "budget": {**base.budget.model_dump(), "max_params": 610},
    })
    with caplog.at_level(logging.WARNING, logger="morphsearch.search.searcher"):
        result = run_search(config)
    assert result.trials == 4 and result.best_arch_id is not None
    said = [r.getMessage() for r in caplog.records if r.name == "morphsearch.search.searcher"]
    assert len(said) == 1 and said[0].startswith("search 'dry': every enabled morphism")
    assert said[0].endswith("the search ends after 4 trial(s), before its budget")
    with LineageStore(config.database) as store:
        assert store.search("dry").status == "finished"
        summary = store.summary("dry")
        assert summary.trials_by_status == {"TERMINATED": 4}
        grown = [n for n in store.descendants("dry/seed") if n.morphisms]
        hidden = sorted((store.architecture(n.parent_id or "").params,
                         store.architecture(n.arch_id).params) for n in grown)  # fmt: skip
        assert hidden == [(460, 535), (460, 610), (535, 610)]
