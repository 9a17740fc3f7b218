"""Options for measuring search efficiency: weight inheritance on/off, training FLOPs."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from morphsearch import artifacts, builders, morphisms
from morphsearch.data import load_dataset
from morphsearch.errors import ConfigError
from morphsearch.lineage import LineageStore
from morphsearch.search.asha import RecentASHAScheduler
from morphsearch.search.config import SearchConfig, load_config
from morphsearch.search.protocol import PlannedMorphism, TrialPlan
from morphsearch.search.runner import TrainFlopsStopper, spent_flops
from morphsearch.search.space import ParentInfo
from morphsearch.search.trial import TrialSetup, grow_child, make_optimizer, morphism_flops
from tests.search.conftest import TINY, digits_space, load_config_text, run_trial_here


def test_defaults_inherit_and_no_flops_budget() -> None:
    config = SearchConfig.model_validate(TINY)
    assert config.selection.inherit_weights is True
    assert config.budget.max_train_flops is None


def test_options_parse_and_validate(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(
        "seed_graph: {builder: mlp}\ndataset: {name: digits}\n"
        "selection: {inherit_weights: false}\nbudget: {max_train_flops: 1.0e9}\n"
    )
    config = load_config(path)
    assert config.selection.inherit_weights is False
    assert config.budget.max_train_flops == 1e9
    path.write_text(
        "seed_graph: {builder: mlp}\ndataset: {name: digits}\nbudget: {max_train_flops: 0}\n"
    )
    with pytest.raises(ConfigError, match="max_train_flops"):
        load_config(path)


def _parent_config(tmp_path: Path, morphism: str | None, **plan: Any) -> TrialPlan:
    parent = builders.mlp([64, 8, 10], activation="tanh", seed=3)
    ref = artifacts.write_architecture(parent, str(tmp_path), "parent")
    planned = None if morphism is None else PlannedMorphism(morphism, "fc1", {"k": 4}, 7)
    fields: dict[str, Any] = {"parent_id": "p", "parent_uri": ref.uri,
                              "parent_sha256": ref.sha256, "morphism": planned,
                              "trial_seed": 7, "lr": 0.01, "lr_schedule": "constant", **plan}
    return TrialPlan(**fields)


def test_inherit_off_reinitialises_the_same_graph(tmp_path: Path) -> None:
    data = load_dataset("digits", seed=0, image=False)
    probe = data.x_train[:32], data.y_train[:32]
    config = _parent_config(tmp_path, "widen.gradmax")
    parent = artifacts.read_architecture(config.parent_uri)
    inherited, records, spent = grow_child(config, probe, parent, inherit=True)
    fresh, records_off, spent_off = grow_child(config, probe, parent, inherit=False)
    assert inherited.structure_hash == fresh.structure_hash
    assert records == records_off and spent == spent_off > 0
    x = data.x_val[:16]
    with torch.no_grad():
        want = parent.to_module()(x)
        assert torch.allclose(inherited.to_module()(x), want, atol=1e-5)
        assert not torch.allclose(fresh.to_module()(x), want, atol=1e-2)
    # GradMax pays a forward+backward pass of the parent over the batch on top of the check
    assert spent == morphism_flops("widen.gradmax", parent, inherited, 32)
    assert spent > morphism_flops("widen.split", parent, inherited, 32)


PER_EPOCH = 19  # digits: 1169 training samples at batch 64


def _run_trial(
    tmp_path: Path, config: TrialPlan, epochs: int = 4, child_epochs: int | None = None,
    **setup: Any,
) -> list[dict[str, Any]]:
    fields: dict[str, Any] = {
        "search": "s", "artifacts_uri": str(tmp_path / "art"), "dataset": "digits",
        "dataset_options": (("image", False),), "data_seed": 0, "batch_size": 64,
        "steps": epochs * PER_EPOCH, "eval_every": PER_EPOCH,
        "child_steps": None if child_epochs is None else child_epochs * PER_EPOCH,
        "checkpoint_every_s": 1e9, **setup,
    }
    return run_trial_here(config, TrialSetup(**fields))


def test_train_flops_reported_cumulatively(tmp_path: Path) -> None:
    config = _parent_config(tmp_path, "widen.split")
    reports = _run_trial(tmp_path, config, epochs=3, inherit_weights=False)
    data = load_dataset("digits", seed=0, image=False)
    assert len(data.x_train) <= 64 * PER_EPOCH < len(data.x_train) + 64
    child_arch = artifacts.read_architecture(reports[-1]["weights_uri"])
    per_epoch = 3 * child_arch.flops * len(data.x_train)  # forward + backward per sample
    grow = reports[0]["train_flops"] - per_epoch
    assert grow > 0  # the morphism's probe passes are counted
    assert [r["train_flops"] for r in reports] == [grow + e * per_epoch for e in (1, 2, 3)]


def test_train_flops_stopper_sums_the_latest_value_per_trial() -> None:
    stopper = TrainFlopsStopper(100)
    assert not stopper("a", {"train_flops": 40})
    assert not stopper("a", {"train_flops": 60})  # cumulative per trial: 60, not 100
    assert not stopper("b", {"train_flops": 30})
    assert stopper("b", {"train_flops": 40})
    assert stopper.stop_all()


def test_train_flops_stopper_counts_evaluations_after_the_kept_one() -> None:
    # a trial stopped on patience ends with its kept (earlier) evaluation's metrics; what
    # it trained after that comes in epoch_history and is spent all the same
    stopper = TrainFlopsStopper(100)
    assert not stopper("a", {"train_flops": 50})
    last = {"train_flops": 40, "epoch_history": json.dumps([{"train_flops": 70}])}
    assert spent_flops(last) == 70
    assert not stopper("a", last)
    assert stopper.spent["a"] == 70
    assert stopper("b", {"train_flops": 30})


# ----------------------------------------------------------------- search efficiency defaults


def test_efficiency_defaults_and_validation(tmp_path: Path) -> None:
    config = SearchConfig.model_validate(TINY)
    assert config.budget.child_epochs is None and config.budget.patience == 3
    assert config.selection.max_children == 3
    assert all(r.k_fraction is None for r in config.morphisms.values())
    # children of a trained parent fine-tune for half the seed's epochs, rounded up
    for epochs, child in ((1, 1), (2, 1), (3, 2), (10, 5)):
        budget = config.budget.model_copy(update={"epochs_per_trial": epochs})
        assert budget.epochs_per_child == child
    explicit = config.budget.model_copy(update={"child_epochs": 7})
    assert explicit.epochs_per_child == 7
    path = tmp_path / "x.yaml"
    head = "seed_graph: {builder: mlp}\ndataset: {name: digits}\n"
    path.write_text(head + "morphisms: {widen.split: {k_fraction: [0.25, 1.0]}}\n")
    assert load_config(path).morphisms["widen.split"].k_fraction == (0.25, 1.0)
    for bad, field in (
        ("morphisms: {widen.split: {k_fraction: [0.5, 0.25]}}", "k_fraction"),
        ("morphisms: {widen.split: {k_fraction: [0, 1]}}", "k_fraction"),
        ("budget: {child_epochs: 0}", "child_epochs"),
        ("budget: {patience: 0}", "patience"),
        ("selection: {max_children: 0}", "max_children"),
    ):
        path.write_text(head + bad + "\n")
        with pytest.raises(ConfigError, match=field):
            load_config(path)
    path.write_text(head + "budget: {patience: null}\nselection: {max_children: null}\n")
    loaded = load_config(path)
    assert loaded.budget.patience is None and loaded.selection.max_children is None


@pytest.mark.parametrize(
    ("change", "setup", "epochs"),
    [
        ({}, {"child_epochs": 2}, 2),  # inheriting child of a trained parent: fine-tunes
        ({"fine_tune": True}, {"child_epochs": 2}, 2),
        ({"fine_tune": False}, {"child_epochs": 2}, 4),  # parent (the seed) not trained yet
        ({"morphism": None}, {"child_epochs": 2}, 4),  # the seed itself trains fully
        ({}, {"child_epochs": 2, "inherit_weights": False}, 4),  # re-initialised child
        ({}, {}, 4),  # no child budget: as before
    ],
)
def test_child_epochs(
    tmp_path: Path, change: dict[str, Any], setup: dict[str, Any], epochs: int
) -> None:
    config = replace(_parent_config(tmp_path, "widen.split"), **change)
    reports = _run_trial(tmp_path, config, **setup)
    assert [r["epoch"] for r in reports] == list(range(1, epochs + 1))
    assert [r["step"] for r in reports[:-1]] == [e * PER_EPOCH for e in range(1, epochs)]
    assert "weights_uri" in reports[-1] and reports[-1]["stopped_early"] is False


def test_patience_stops_a_stalled_trial_with_its_weights(tmp_path: Path) -> None:
    # lr 0: the validation loss never improves after the first epoch
    config = replace(_parent_config(tmp_path, "widen.split"), lr=0.0)
    reports = _run_trial(tmp_path, config, epochs=10, patience=2)
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    assert reports[-1]["stopped_early"] is True
    assert "weights_uri" in reports[-1] and "weights_uri" not in reports[-2]
    assert artifacts.read_architecture(reports[-1]["weights_uri"]).num_params > 0
    # the kept weights are the first epoch's (never improved on): the result says so
    assert reports[-1]["kept_epoch"] == 1 and reports[-1]["val_loss"] == reports[0]["val_loss"]


def test_k_fraction_is_relative_to_the_site_width(tmp_path: Path) -> None:
    space, seed = digits_space(tmp_path, **{"widen.split": {"k_fraction": [0.25, 1.0]}})
    first = next(space._candidates(seed, "widen.split", 0.0, 0.5))
    assert first == ("widen.split", "fc1", {"k": 8})  # half of 16 units
    amounts = [p["k"] for _, _, p in space._candidates(seed, "widen.split", 0.0, 1.0)]
    assert amounts == [16, 8, 4, 2, 1]  # fallbacks halve (a child over max_params), no repeats
    wide = builders.mlp([64, 200, 10], activation="tanh", seed=0)
    assert next(space._candidates(wide, "widen.split", 0.0, 0.25))[2] == {"k": 50}
    # absolute k as before when k_fraction is not given
    plain, _ = digits_space(tmp_path, **{"widen.split": {"k": [2, 4]}})
    assert [p["k"] for *_, p in plain._candidates(seed, "widen.split", 0.0, 3)] == [3, 2, 4]


def test_pool_skips_parents_with_max_children(tmp_path: Path) -> None:
    from types import SimpleNamespace

    space, seed = digits_space(tmp_path)
    graph = seed.to_json()

    class Store:
        def best(self, *args: Any, **kwargs: Any) -> list[Any]:
            return [SimpleNamespace(arch_id=a) for a in ("a", "b", "c", "d")]

        def architecture(self, arch_id: str) -> Any:
            return SimpleNamespace(
                arch_id=arch_id, weights_uri=f"{arch_id}.st", weights_sha256=None, graph=graph,
                structure_hash="h",
            )

        def child_hashes(self, arch_id: str) -> set[str]:
            return set()  # no recorded children

    space._store = Store()
    assert [p.arch_id for p in space.pool()] == ["a", "b"]  # TINY: pool_size 2
    space.suggested |= {("a", "1"), ("a", "2"), ("a", "3"), ("b", "1")}
    assert space.children("a") == 3 and space.children("b") == 1
    assert [p.arch_id for p in space.pool()] == ["b", "c"]  # "a" has 3 children
    space.suggested |= {(p, str(i)) for p in "bcd" for i in range(3)}
    assert [p.arch_id for p in space.pool()] == ["a", "b"]  # all used up: best ones again
    unlimited = space.config.selection.model_copy(update={"max_children": None})
    space.config = space.config.model_copy(update={"selection": unlimited})
    assert [p.arch_id for p in space.pool()] == ["a", "b"]


# ----------------------------------------------------- optimizer carry, lr schedule, lr factor


def test_optimizer_options_parse_and_validate(tmp_path: Path) -> None:
    config = SearchConfig.model_validate(TINY)
    assert config.selection.inherit_optimizer is False
    assert config.budget.lr_schedule == "cosine"
    path = tmp_path / "x.yaml"
    head = "seed_graph: {builder: mlp}\ndataset: {name: digits}\n"
    path.write_text(
        head + "selection: {inherit_optimizer: true}\n"
        "budget: {lr_schedule: constant}\n"
    )
    loaded = load_config(path)
    assert loaded.selection.inherit_optimizer is True
    assert loaded.budget.lr_schedule == "constant"
    for bad, field in (
        ("selection: {inherit_optimizer: maybe}", "inherit_optimizer"),
        ("budget: {lr_schedule: step}", "lr_schedule"),
    ):
        path.write_text(head + bad + "\n")
        with pytest.raises(ConfigError, match=field):
            load_config(path)


def test_child_continues_its_parents_optimizer_state(tmp_path: Path) -> None:
    # without inherit_optimizer a trial saves no optimizer state
    config = _parent_config(tmp_path, None)
    reports = _run_trial(tmp_path, config, epochs=2)
    assert artifacts.load_optimizer(reports[-1]["weights_uri"]) is None
    # with it, the parent trial (no morphism) saves its Adam state beside its weights
    config = replace(config, inherit_optimizer=True)
    reports = _run_trial(tmp_path, config, epochs=2)
    parent_uri = reports[-1]["weights_uri"]
    saved = artifacts.load_optimizer(parent_uri)
    assert saved is not None and saved["lr"] == 0.01
    parent = artifacts.read_architecture(parent_uri)
    data = load_dataset("digits", seed=0, image=False)
    steps = PER_EPOCH * 2
    old = saved["state"]["state"]
    assert all(int(s["step"]) == steps for s in old.values())
    # a child widened by 4 units continues it: old units keep their moments, new ones 0
    child_config = replace(
        _parent_config(tmp_path, "widen.split"), parent_uri=parent_uri,
        parent_sha256=reports[-1]["weights_sha256"], inherit_optimizer=True, lr=0.003,
    )
    setup = TrialSetup("s", str(tmp_path), "digits", (("image", False),), 0, 64, 2, 1)
    child, _, _ = grow_child(child_config, (data.x_train[:32], data.y_train[:32]), parent)
    module = child.to_module()
    optimizer = make_optimizer(child_config, setup, parent, child, module)
    assert [g["lr"] for g in optimizer.param_groups] == [0.003]
    names = [n for n, _ in parent.to_module().named_parameters()]
    params = dict(module.named_parameters())
    fc1_w = optimizer.state[params["layers.fc1.weight"]]
    parent_w = old[names.index("layers.fc1.weight")]
    assert int(fc1_w["step"]) == steps
    assert torch.equal(fc1_w["exp_avg_sq"][:8], parent_w["exp_avg_sq"])
    assert torch.count_nonzero(fc1_w["exp_avg_sq"][8:]) == 0  # the 4 added units
    out_w = optimizer.state[params["layers.fc2.weight"]]  # grown along its input axis
    assert out_w["exp_avg"].shape == (10, 12)
    assert torch.equal(out_w["exp_avg"][:, :8], old[names.index("layers.fc2.weight")]["exp_avg"])
    # off (or with re-initialised children, or no saved state): a fresh Adam
    unsaved = _parent_config(tmp_path, None).parent_uri
    for change, fields in (
        ({"inherit_optimizer": False}, {}),
        ({}, {"inherit_weights": False}),
        ({"parent_uri": unsaved}, {}),  # no state
    ):
        other = TrialSetup("s", str(tmp_path), "digits", (("image", False),), 0, 64, 2, 1,
                           inherit_weights=fields.get("inherit_weights", True))
        fresh = make_optimizer(replace(child_config, **change), other, parent, child, module)
        assert not fresh.state
    # the carried optimizer trains the child end to end
    reports = _run_trial(tmp_path, child_config, epochs=1)
    assert "weights_uri" in reports[-1]
    assert artifacts.load_optimizer(reports[-1]["weights_uri"]) is not None


def test_a_trial_trains_on_the_cosine_schedule_per_step(tmp_path: Path) -> None:
    # the lr follows the step: after 2 epochs of 19 steps the last step (37 of 38)
    # trained at lr (1 + cos(37 pi / 38)) / 2; the saved optimizer state shows it
    steps = 2 * PER_EPOCH
    for schedule, last_lr in (
        ("cosine", 0.01 * (1 + math.cos(math.pi * (steps - 1) / steps)) / 2),
        ("constant", 0.01),
    ):
        config = replace(_parent_config(tmp_path, None), inherit_optimizer=True,
                         lr_schedule=schedule)
        reports = _run_trial(tmp_path, config, epochs=2, patience=None)
        saved = artifacts.load_optimizer(reports[-1]["weights_uri"])
        assert saved is not None and saved["lr"] == 0.01
        assert saved["state"]["param_groups"][0]["lr"] == pytest.approx(last_lr, rel=1e-9)


def test_space_passes_the_training_options_to_every_trial(tmp_path: Path) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, _ = digits_space(tmp_path, **{"widen.split": {"k": [2, 4]}})
    budget = space.config.budget.model_copy(update={"lr_schedule": "constant"})
    space.config = space.config.model_copy(update={"budget": budget})

    class EmptyStore:  # no trained architecture yet: the first trials
        def best(self, *args: Any, **kwargs: Any) -> list[Any]:
            return []

        def child_hashes(self, arch_id: str) -> set[str]:
            return set()

    space._store = EmptyStore()
    study = optuna.create_study(direction="maximize")
    seen = []
    for inherit in (True, False):  # passed on with inherit_weights (the default)
        selection = space.config.selection.model_copy(update={"inherit_optimizer": inherit})
        space.config = space.config.model_copy(update={"selection": selection})
        trial = study.ask()
        out = space(trial)  # the seed, then a child of the (untrained) seed
        assert out["lr"] == trial.params["lr"] and out["lr_schedule"] == "constant"
        seen.append(out["inherit_optimizer"])
    assert seen == [True, False]
    # re-initialised children have no optimizer state to continue
    selection = space.config.selection.model_copy(
        update={"inherit_optimizer": True, "inherit_weights": False}
    )
    space.config = space.config.model_copy(update={"selection": selection})
    assert space(study.ask())["inherit_optimizer"] is False


def test_pool_ranks_by_rank_by_when_given(tmp_path: Path) -> None:
    from types import SimpleNamespace

    space, seed = digits_space(tmp_path)
    graph = seed.to_json()
    values = {"val_accuracy": {"a": 0.91, "b": 0.90, "c": 0.89},
              "val_loss": {"a": 0.40, "b": 0.20, "c": 0.30}}

    class Store:  # ranks like LineageStore.best would
        def best(self, search: str, metric: str, mode: str, k: int = 1) -> list[Any]:
            ranked = sorted(values[metric], key=values[metric].get, reverse=mode == "max")
            return [SimpleNamespace(arch_id=a) for a in ranked[:k]]

        def architecture(self, arch_id: str) -> Any:
            return SimpleNamespace(arch_id=arch_id, weights_uri=f"{arch_id}.st",
                                   weights_sha256=None, graph=graph)

        def child_hashes(self, arch_id: str) -> set[str]:
            return set()

    space._store = Store()
    assert [p.arch_id for p in space.pool()] == ["a", "b"]  # the objective: val_accuracy
    data = {**TINY, "selection": {**TINY["selection"],
                                  "rank_by": {"metric": "val_loss", "mode": "min"}}}
    space.config = SearchConfig.model_validate(data)
    assert [p.arch_id for p in space.pool()] == ["b", "c"]
    with pytest.raises(ConfigError, match="rank_by"):
        load_config_text(tmp_path, "selection: {rank_by: {metric: val_loss}}")


def _capped_space(tmp_path: Path, cap: float | None, **spec: Any) -> tuple[Any, Any]:
    """``digits_space`` with ``budget.max_flops_growth: cap``."""
    space, seed = digits_space(tmp_path, **spec)
    budget = space.config.budget.model_copy(update={"max_flops_growth": cap})
    space.config = space.config.model_copy(update={"budget": budget})
    return space, seed


def test_max_flops_growth_caps_a_child_s_flops_against_its_parent_s(tmp_path: Path) -> None:
    spec = {"widen.split": {"k_fraction": [0.25, 1.0]}}
    space, seed = _capped_space(tmp_path, None, **spec)
    LineageStore(space.db_url, write=True).close()  # an empty lineage: no children yet
    # uncapped, k_fraction 1.0 doubles fc1 (16 -> 32 units): nearly twice the FLOPs
    assert morphisms.plan("widen.split", seed, "fc1", k=16).flops > 1.9 * seed.flops
    planned, _ = space._resolve(space.seed_info, "widen.split", 0.0, 1.0, 0)
    assert planned.params == {"k": 16}
    # capped at 1.5x: the same choice falls back to half the amount, within the cap
    capped, _ = _capped_space(tmp_path, 1.5, **spec)
    planned, _ = capped._resolve(space.seed_info, "widen.split", 0.0, 1.0, 0)
    assert planned.params == {"k": 8}
    child = morphisms.plan("widen.split", seed, planned.site, **planned.params)
    assert seed.flops < child.flops <= 1.5 * seed.flops
    # a conv parent that is not the seed: FLOPs, not parameters, and against the parent
    conv = builders.cnn((1, 8, 8), channels=[16], hidden=[], seed=0)
    parent = ParentInfo("p", "unused", None, conv.to_json())
    spec = {"deepen.identity": {"params": {"kernel_size": 3}}, "widen.split": {"k": [4, 8]}}
    for cap, first in ((None, "deepen.identity"), (2.0, "widen.split")):
        space, mlp_seed = _capped_space(tmp_path, cap, **spec)
        planned, _ = space._resolve(parent, "deepen.identity", 0.0, 4, 0)
        assert planned.name == first
    # the identity convolution adds 1.9x the parameters but 13x the FLOPs: refused at 2,
    # and the search falls back to widening, 1.25x the parent's FLOPs (though many times
    # the MLP seed's: the cap is against the parent)
    deeper = morphisms.plan("deepen.identity", conv, "relu1", kernel_size=3)
    assert deeper.num_params < 2 * conv.num_params and deeper.flops > 10 * conv.flops
    wider = morphisms.plan("widen.split", conv, planned.site, **planned.params)
    assert wider.flops <= 2 * conv.flops and wider.flops > 2 * mlp_seed.flops
    with pytest.raises(ConfigError, match="max_flops_growth"):
        load_config_text(tmp_path, "budget: {max_flops_growth: 1.0}")


def test_prefer_cheaper_within_ranks_tied_parents_cheapest_first(tmp_path: Path) -> None:
    from types import SimpleNamespace

    space, seed = digits_space(tmp_path)
    graph = seed.to_json()
    # name: (val_accuracy, val_loss, forward FLOPs). "big" is best on both metrics;
    # "mid" and "small" are within 0.01 of it, "far" is not, however cheap
    scored = {"big": (0.931, 0.200, 900_000), "mid": (0.926, 0.205, 50_000),
              "small": (0.925, 0.207, 3_000), "far": (0.911, 0.250, 1_000)}

    class Store:  # ranks like LineageStore.best would: by metric and mode, k best
        def best(self, search: str, metric: str, mode: str, k: int | None = 1) -> list[Any]:
            column = 0 if metric == "val_accuracy" else 1
            ranked = sorted(scored, key=lambda a: scored[a][column], reverse=mode == "max")
            return [SimpleNamespace(arch_id=a, value=scored[a][column], flops=scored[a][2])
                    for a in ranked[:k]]

        def architecture(self, arch_id: str) -> Any:
            return SimpleNamespace(arch_id=arch_id, weights_uri=f"{arch_id}.st",
                                   weights_sha256=None, graph=graph)

        def child_hashes(self, arch_id: str) -> set[str]:
            return set()

    def pool(within: float | None, size: int = 4, rank_by: Any = None) -> list[str]:
        selection = space.config.selection.model_copy(
            update={"prefer_cheaper_within": within, "pool_size": size, "rank_by": rank_by})
        space.config = space.config.model_copy(update={"selection": selection})
        return [p.arch_id for p in space.pool()]

    space._store = Store()
    assert pool(None) == ["big", "mid", "small", "far"]  # off: by value alone
    assert pool(0.01) == ["small", "mid", "big", "far"]
    assert pool(0.01, size=2) == ["small", "mid"]
    assert pool(0.0055) == ["mid", "big", "small", "far"]  # "small" is 0.006 below
    assert pool(0.0) == ["big", "mid", "small", "far"]
    # a minimised metric: ties are measured upwards from the lowest loss
    loss = space.config.objectives[0].model_copy(update={"metric": "val_loss", "mode": "min"})
    assert pool(None, rank_by=loss) == ["big", "mid", "small", "far"]
    assert pool(0.0055, rank_by=loss) == ["mid", "big", "small", "far"]  # small: +0.007
    # a tied cheap parent is found however many costlier ones rank above it by value
    scored.update({f"wide{i}": (0.930 - i / 1000, 0.201 + i / 1000, 800_000) for i in range(6)})
    assert pool(0.01, size=1) == ["small"]
    assert pool(None, size=1) == ["big"]
    with pytest.raises(ConfigError, match="prefer_cheaper_within"):
        load_config_text(tmp_path, "selection: {prefer_cheaper_within: -0.01}")


@pytest.mark.parametrize("mode", ["max", "min"])
def test_asha_window_compares_a_trial_with_recent_trials_only(mode: str) -> None:
    from types import SimpleNamespace

    sign = 1.0 if mode == "max" else -1.0  # a loss: the same ranking, lower is better
    settings = dict(metric="m", mode=mode, time_attr="epoch", max_t=10, grace_period=2,
                    reduction_factor=3)  # fmt: skip

    def decision(scheduler: Any) -> str:
        # six early, weak trials, then three recent, strong ones reach the rung at 2
        history = [0.50, 0.51, 0.52, 0.53, 0.54, 0.55, 0.90, 0.91, 0.92]
        for i, value in enumerate(history):
            trial = SimpleNamespace(trial_id=f"t{i}")
            scheduler.on_trial_add(None, trial)
            scheduler.on_trial_result(None, trial, {"epoch": 2, "m": sign * value})
        new = SimpleNamespace(trial_id="new")
        scheduler.on_trial_add(None, new)
        return str(scheduler.on_trial_result(None, new, {"epoch": 2, "m": sign * 0.85}))

    # every earlier trial: the cutoff (top third of nine) is 0.57, and 0.85 goes on;
    # the last three: the cutoff is 0.913, and 0.85 stops
    assert decision(ASHAScheduler(**settings)) == TrialScheduler.CONTINUE
    assert decision(RecentASHAScheduler(3, **settings)) == TrialScheduler.STOP
    assert decision(RecentASHAScheduler(9, **settings)) == TrialScheduler.CONTINUE


def test_asha_window_is_validated(tmp_path: Path) -> None:
    config = load_config_text(tmp_path, "scheduler: {asha: true, window: 6}")
    assert config.scheduler.window == 6
    with pytest.raises(ConfigError, match="window"):
        load_config_text(tmp_path, "scheduler: {asha: true, window: 1}")
    with pytest.raises(ConfigError, match=r"window.*asha"):
        load_config_text(tmp_path, "scheduler: {window: 6}")  # nothing to window


def test_asha_window_names_itself_when_ray_s_asha_cannot_be_windowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import morphsearch.search.asha as asha

    class OtherBracket:  # a Ray whose ASHA brackets are not the class this module windows
        pass

    monkeypatch.setattr(asha, "_Bracket", OtherBracket)
    with pytest.raises(ConfigError, match=r"scheduler\.window.*null"):
        asha.RecentASHAScheduler(3, metric="m", mode="max", time_attr="epoch", max_t=10,
                                 grace_period=2, reduction_factor=3)  # fmt: skip
