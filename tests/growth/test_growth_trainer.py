"""The growing trainer: saddle escape by growth, caps, events, optimizer state, digits."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from morphsearch import builders, morphisms
from morphsearch.data import load_dataset
from morphsearch.errors import ConfigError
from morphsearch.growth import GrowthConfig, LossPlateau, Schedule, find_plateaus, train
from tests.growth._nets import dominant_directions, linear_net

torch.set_num_threads(1)


def test_linear_autoencoder_plateau_growth_breaks_the_rank_one_saddle() -> None:
    # "Saddles, Splitting, and Reparameterization: Dynamically Growing Neural Networks"
    # (blog post, unsigned, 2026): L = |x - ABx|^2 with a 1-unit bottleneck stalls at the
    # best rank-1 loss; the plateau trigger splits in capacity and the loss drops to the
    # rank-3 level.
    x = dominant_directions(256, [3.0, 2.0, 1.5, 0.1, 0.1, 0.1], seed=0)
    arch = linear_net(6, [1], 6, seed=0)
    base = dict(steps=1200, optimizer="sgd", lr=0.05, batch_size=None)
    grown = train(arch, (x, x), GrowthConfig(
        **base, trigger=LossPlateau(window=60, tol=0.01, min_loss=0.01),
        morphisms=("widen.random",), max_growths=3))
    fixed = train(arch, (x, x), GrowthConfig(**base))
    rank1_level = (2.0**2 + 1.5**2 + 3 * 0.1**2) / 6
    assert abs(fixed.losses[-1] - rank1_level) < 0.15 * rank1_level  # stuck at the saddle
    assert 1 <= len(grown.events) <= 3
    first = grown.events[0]
    assert first.site == "fc1" and first.params_after == arch.num_params + 12
    assert abs(first.loss_after - first.loss_before) < 1e-5  # function preserved
    assert grown.losses[-1] < 0.25 * fixed.losses[-1]
    assert grown.arch.shape("fc1") == (1 + len(grown.events),)


def test_deep_linear_saddle_to_saddle_plateaus_and_growth_escapes_them() -> None:
    # Jacot et al., "Saddle-to-Saddle Dynamics in Deep Linear Networks" (2021): a
    # small-initialised deep linear net visits saddles of increasing rank.
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    v, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    target = u[:, :3] @ torch.diag(torch.tensor([4.0, 2.0, 1.0])) @ v[:, :3].T
    x = torch.randn(256, 6, generator=g)
    y = x @ target.T
    cfg = dict(steps=1000, optimizer="sgd", lr=0.08, batch_size=None)
    wide = train(linear_net(6, [6, 6], 6, scale=0.05), (x, y), GrowthConfig(**cfg))
    plateaus = find_plateaus(wide.losses, window=40, tol=0.01)
    assert len(plateaus) >= 2  # the origin saddle, then the rank-1 saddle
    levels = [wide.losses[(a + b) // 2] for a, b in plateaus]
    assert levels == sorted(levels, reverse=True) and levels[0] > 2 * levels[1]
    # A narrow (rank-1) small-initialised net: growth on plateaus escapes past rank 1.
    narrow = linear_net(6, [1, 1], 6, scale=0.3)
    grown = train(narrow, (x, y), GrowthConfig(
        **cfg, trigger=LossPlateau(window=40, tol=0.01, min_loss=1e-3),
        morphisms=("widen.random",), max_growths=6))
    stuck = train(narrow, (x, y), GrowthConfig(**cfg))
    assert len(grown.events) >= 2
    assert {e.site for e in grown.events} == {"fc1", "fc2"}
    assert grown.losses[-1] < 0.5 * stuck.losses[-1]
    rank1 = (2.0**2 + 1.0**2) / 6  # E|residual|^2 / d with the top direction fitted
    assert stuck.losses[-1] > 0.8 * rank1 and grown.losses[-1] < 0.8 * rank1


@pytest.mark.slow
def test_digits_grows_from_4_hidden_units_to_96_percent_test_accuracy() -> None:
    data = load_dataset("digits", seed=0, image=False)
    cfg = GrowthConfig(
        steps=3000, lr=1e-2, batch_size=64,
        trigger=LossPlateau(window=50, tol=0.05), morphisms=("widen.random",),
        morphism_params={"widen.random": {"k": 4}}, max_params=3658, min_steps_between=50,
        eval_every=25, target_accuracy=0.96, seed=0,
    )
    result = train(builders.mlp([64, 4, 10]), data, cfg, eval_data=data.split("test"))
    assert result.evals[-1].accuracy is not None and result.evals[-1].accuracy >= 0.96
    assert result.events and result.arch.num_params <= 3658
    assert result.arch.shape("fc1")[0] > 4


def test_a_plateau_that_never_comes_means_no_growth() -> None:
    x = torch.randn(128, 4)
    y = x @ torch.randn(4, 2)
    cfg = GrowthConfig(steps=300, optimizer="sgd", lr=0.002, batch_size=None,
                       trigger=LossPlateau(window=50, tol=0.01))
    result = train(linear_net(4, [4], 2), (x, y), cfg)
    assert result.events == ()
    assert result.losses[-1] < 0.8 * result.losses[0]  # still descending at the end


def test_caps_stop_growth() -> None:
    x = torch.randn(64, 4)
    y = torch.randint(0, 3, (64,))
    arch = builders.mlp([4, 2, 3])  # 19 params; each widen.random(k=1) adds 4+1+3 = 8
    every = GrowthConfig(steps=60, trigger=Schedule(start=0, every=5, max_growths=100))
    assert len(train(arch, (x, y), GrowthConfig(**{**every.__dict__, "max_params": 35})).events) == 2
    assert len(train(arch, (x, y), GrowthConfig(**{**every.__dict__, "max_growths": 3})).events) == 3
    spaced = GrowthConfig(**{**every.__dict__, "min_steps_between": 20})
    assert [e.step for e in train(arch, (x, y), spaced).events] == [0, 20, 40]


def test_events_chain_parent_to_child_and_replay() -> None:
    x = torch.randn(64, 4)
    y = torch.randint(0, 3, (64,))
    cfg = GrowthConfig(steps=30, trigger=Schedule(start=10, every=10, max_growths=2),
                       morphisms=("widen.random", "deepen.identity"))
    result = train(builders.mlp([4, 2, 3]), (x, y), cfg)
    first, second = result.events
    assert first.child_hash == second.parent_hash == second.parent.structure_hash
    assert second.child_hash == result.arch.structure_hash
    assert set(first.scores) == {"widen.random@fc1", "deepen.identity@relu1"}
    json.dumps([e.to_json() for e in result.events])  # lineage stores these as JSON
    replayed = morphisms.replay(first.morphism, first.parent)
    assert replayed.child.structure_hash == first.child_hash
    assert result.num_params[10] == 19 and result.num_params[11] > 19  # grown after step 10


def test_optimizer_state_carried_so_the_loss_does_not_jump() -> None:
    data = load_dataset("digits", seed=0, image=False)
    cfg = GrowthConfig(steps=200, lr=3e-3, batch_size=None,
                       trigger=Schedule(start=150, every=1000), morphisms=("widen.random",))
    result = train(builders.mlp([64, 8, 10]), data, cfg)
    (event,) = result.events
    assert abs(event.loss_after - event.loss_before) < 1e-5
    s = event.step
    assert max(result.losses[s + 1 : s + 10]) < 1.02 * result.losses[s]


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="optimizer 'rmsprop'"):
        GrowthConfig(optimizer="rmsprop")  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not present"):
            train(builders.mlp([4, 2, 3]), (torch.randn(4, 4), torch.zeros(4, dtype=torch.long)),
                  GrowthConfig(steps=1, device="cuda"))


def test_growth_keeps_the_old_units_adam_state() -> None:
    # After a growth event the optimizer is not restarted: the old units' Adam moments
    # survive (a fresh Adam would have empty state), the new units' moments are zero.
    from morphsearch.growth.trainer import GrowingTrainer

    data = load_dataset("digits", seed=0, image=False)
    cfg = GrowthConfig(steps=40, lr=3e-3, batch_size=None, optimizer="adam",
                       trigger=Schedule(start=30, every=1000), morphisms=("widen.random",),
                       morphism_params={"widen.random": {"k": 2}})
    trainer = GrowingTrainer(builders.mlp([64, 8, 10]), data, cfg)
    result = trainer.run()
    (event,) = result.events
    weight = trainer.module.layers.fc1.weight
    state = trainer.optimizer.state[weight]
    assert weight.shape[0] == 10
    assert float(state["step"]) == 40  # one counter per tensor, carried through growth
    assert event.step == 30
    # new rows started at zero and have seen only the 10 steps since the growth
    assert state["exp_avg_sq"][8:].abs().max() < state["exp_avg_sq"][:8].abs().max()


def test_an_empty_scoring_round_does_not_stop_later_growth() -> None:
    # A round where no candidate can be scored is not a size cap: growth must go on
    # once candidates score again (it used to switch growth off for the whole run).
    from morphsearch.growth.scores import RoundRobin

    class EmptyFirst(RoundRobin):
        calls = 0

        def score(self, arch, batch, candidates, *, seed=0):  # type: ignore[no-untyped-def]
            EmptyFirst.calls += 1
            return [] if EmptyFirst.calls == 1 else super().score(arch, batch, candidates, seed=seed)

    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    cfg = GrowthConfig(steps=40, batch_size=None, trigger=Schedule(start=10, every=10, max_growths=3),
                       scorer=EmptyFirst(), morphisms=("widen.random",))
    result = train(builders.mlp([6, 2, 3]), (x, y), cfg)
    assert EmptyFirst.calls >= 2
    assert len(result.events) >= 1


def test_cosine_schedule_follows_the_step_count_across_growth() -> None:


    from morphsearch.growth.trainer import GrowingTrainer

    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    cfg = GrowthConfig(steps=20, lr=0.1, optimizer="sgd", lr_schedule="cosine",
                       batch_size=None, trigger=Schedule(start=7, every=1000))
    trainer = GrowingTrainer(builders.mlp([4, 2, 3]), (x, y), cfg)
    seen: list[float] = []
    step = trainer._train_step

    def recording() -> None:
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        step()

    trainer._train_step = recording  # type: ignore[method-assign]
    result = trainer.run()
    assert [e.step for e in result.events] == [7]  # the optimizer was rebuilt at step 7
    # lr at the start, (2 + sqrt 2) / 4 of it a quarter in, half at the middle, falling
    assert seen[0] == 0.1 and seen[5] == pytest.approx(0.0853553390593, rel=1e-9)
    assert seen[10] == pytest.approx(0.05, rel=1e-9) and seen[19] < 0.001
    assert all(a > b for a, b in itertools.pairwise(seen))
    with pytest.raises(ConfigError, match="lr_schedule 'step'"):
        GrowthConfig(lr_schedule="step")  # type: ignore[arg-type]
