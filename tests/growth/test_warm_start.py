"""Shrink and perturb: the warm-start remedy an inheriting child may start from."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from morphsearch import artifacts, builders
from morphsearch.arch import Architecture
from morphsearch.data import load_dataset
from morphsearch.errors import ConfigError
from morphsearch.growth.warm_start import shrink_perturb
from morphsearch.morphisms._surgery import batch_loss
from morphsearch.search.config import load_config
from morphsearch.search.protocol import PlannedMorphism, TrialPlan
from morphsearch.search.trial import TrialSetup, grow_child, probe_batch
from tests.search.conftest import run_trial_here


def test_trainable_weights_mix_the_scaled_weights_with_a_fresh_init() -> None:
    arch = builders.cnn(batchnorm=True, seed=1)
    bn = {"running_mean": torch.full((8,), 0.25), "running_var": torch.full((8,), 2.0),
          "num_batches_tracked": torch.tensor(5)}  # fmt: skip
    arch = arch.with_weights({**arch.weights, "bn1": {**arch.weights["bn1"], **bn}})
    fresh = Architecture(arch.editable_graph(), seed=9, dtype=arch.dtype).weights
    out = shrink_perturb(arch, 0.4, 0.1, seed=9)
    assert out.structure_hash == arch.structure_hash
    for node, params in arch.weights.items():
        for name, t in params.items():
            got = out.weights[node][name]
            if name in bn:  # batch norm's statistics are not weights: left as they are
                assert torch.equal(got, t)
            else:
                torch.testing.assert_close(got, 0.4 * t + 0.1 * fresh[node][name])
    # shrink 1, perturb 0: the same network
    assert shrink_perturb(arch, 1.0, 0.0, seed=9).weights_hash == arch.weights_hash
    with pytest.raises(ValueError, match=re.escape("need 0 < shrink <= 1 and perturb >= 0, "
                                                   "not 0.0 and 0.1")):
        shrink_perturb(arch, 0.0, 0.1, seed=0)


def _parent_and_plan(tmp_path: Path) -> tuple[Architecture, TrialPlan]:
    """A digits MLP on storage and the plan of its Net2Wider child (trial seed 7)."""
    parent = builders.mlp([64, 8, 10], seed=3, input_shape=(1, 8, 8))
    ref = artifacts.write_architecture(parent, str(tmp_path), "parent")
    plan = TrialPlan(parent_id="p", parent_uri=ref.uri, parent_sha256=ref.sha256,
                     morphism=PlannedMorphism("widen.split", "fc1", {"k": 4}, 7),
                     trial_seed=7, lr=0.01, lr_schedule="constant")  # fmt: skip
    return parent, plan


def test_only_an_inheriting_child_is_shrunk_and_perturbed(tmp_path: Path) -> None:
    parent, plan = _parent_and_plan(tmp_path)
    data = load_dataset("digits", seed=0)
    probe = data.x_train[:32], data.y_train[:32]
    exact, records, spent = grow_child(plan, probe, parent)
    started, records_sp, spent_sp = grow_child(plan, probe, parent, True, (0.5, 0.1))
    assert (records_sp, spent_sp) == (records, spent)  # the morphism's record is unchanged
    assert started.weights_hash == shrink_perturb(exact, 0.5, 0.1, seed=7).weights_hash
    fresh, _, _ = grow_child(plan, probe, parent, False, (0.5, 0.1))  # the control: fresh
    assert fresh.weights_hash == Architecture(exact.editable_graph(), seed=7).weights_hash
    seed_plan = replace(plan, morphism=None)
    assert grow_child(seed_plan, probe, parent, True, (0.5, 0.1))[0] is parent  # the seed
    # a child of an untrained parent (seed_first: false) too: a smaller initialisation
    # (measured better on validation than the parent's initial weights as they are)
    untrained = replace(plan, fine_tune=False)
    assert grow_child(untrained, probe, parent, True, (0.5, 0.1))[0].weights_hash == (
        started.weights_hash)


def test_a_trial_with_the_option_starts_from_the_shrunk_child(tmp_path: Path) -> None:
    # through run_trial: the reported first_batch_loss is the shrunk child's probe loss,
    # no longer the exact child's
    parent, plan = _parent_and_plan(tmp_path)
    data = load_dataset("digits", seed=0)
    probe = probe_batch(data, 64)
    first = {}
    for option in (None, (0.5, 0.1)):
        setup = TrialSetup(search="s", artifacts_uri=str(tmp_path / "art"), dataset="digits",
                           dataset_options=(), data_seed=0, batch_size=64, steps=19,
                           eval_every=19, checkpoint_every_s=1e9, shrink_perturb=option)
        first[option] = run_trial_here(plan, setup)[0]["first_batch_loss"]
    exact = grow_child(plan, probe, parent)[0]
    with torch.no_grad():
        for option, child in ((None, exact), ((0.5, 0.1), shrink_perturb(exact, 0.5, 0.1,
                                                                          seed=7))):
            want = float(batch_loss(child.to_module().eval()(probe[0]), probe[1]))
            assert first[option] == pytest.approx(want, rel=1e-5)
    assert abs(first[None] - first[(0.5, 0.1)]) > 0.01


def test_shrink_perturb_and_inherit_optimizer_are_refused_together(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("seed_graph: {builder: mlp}\ndataset: {name: digits}\nselection: "
                    "{shrink_perturb: [0.5, 0.1], inherit_optimizer: true}\n")
    with pytest.raises(ConfigError, match="drop 'inherit_optimizer' or 'shrink_perturb'"):
        load_config(path)


@pytest.mark.parametrize("value", ["[0.0, 0.1]", "[1.5, 0.1]", "[0.5, -1]"])
def test_bad_shrink_perturb_is_refused_in_one_line(tmp_path: Path, value: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("seed_graph: {builder: mlp}\ndataset: {name: digits}\n"
                    f"selection: {{shrink_perturb: {value}}}\n")
    with pytest.raises(ConfigError, match=r"shrink_perturb.*0 < shrink <= 1") as info:
        load_config(path)
    assert "\n" not in str(info.value)
