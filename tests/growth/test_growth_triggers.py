"""Triggers: when they fire and when they must not."""

from __future__ import annotations

import math

import pytest

from morphsearch.errors import ConfigError
from morphsearch.growth import (
    LossPlateau,
    Schedule,
    ScoreThreshold,
    find_plateaus,
    relative_improvement,
)


def test_schedule_fires_at_start_then_every_n_steps_up_to_max() -> None:
    s = Schedule(start=200, every=200, max_growths=5)
    fired = [step for step in range(2000) if s.should_grow(step, [])]
    assert fired == [200, 400, 600, 800, 1000]
    with pytest.raises(ConfigError, match="every >= 1"):
        Schedule(every=0)


def test_relative_improvement_of_known_curves() -> None:
    assert relative_improvement([1.0] * 100, 100) == 0.0
    # Linear decay from 2 to 1: first quarter mean 1.88, last quarter mean 1.12.
    line = [2 - i / 99 for i in range(100)]
    early, late = sum(line[:25]) / 25, sum(line[-25:]) / 25
    assert math.isclose(relative_improvement(line, 100), (early - late) / early)
    with pytest.raises(ConfigError, match="window 200"):
        relative_improvement(line, 200)


def test_plateau_fires_on_a_flat_loss_and_waits_a_window_after_reset() -> None:
    trig = LossPlateau(window=20, tol=0.01)
    decaying = [math.exp(-0.05 * i) for i in range(60)]
    assert not any(trig.should_grow(i, decaying[: i + 1]) for i in range(60))
    flat = decaying + [decaying[-1]] * 40
    assert trig.should_grow(99, flat)
    trig.reset()
    # After a growth it needs a full window of new losses before judging again.
    assert not trig.should_grow(100, [*flat, flat[-1]])
    assert trig.should_grow(119, flat + [flat[-1]] * 20)


def test_plateau_at_the_target_loss_is_not_a_saddle() -> None:
    trig = LossPlateau(window=10, tol=0.01, min_loss=1e-3)
    assert not trig.should_grow(30, [1e-4] * 31)
    assert trig.should_grow(30, [0.5] * 31)


def test_score_threshold_compares_the_best_score() -> None:
    trig = ScoreThreshold(tau=0.1, check_every=5)
    assert trig.needs_score
    assert trig.should_grow(0, [], best_score=0.2)
    assert not trig.should_grow(0, [], best_score=0.05)
    assert not trig.should_grow(0, [], best_score=None)
    assert trig.wants_score(10) and not trig.wants_score(11)


def test_find_plateaus_finds_two_plateaus_separated_by_drops() -> None:
    curve = [3.0] * 200 + [3.0 - 2.0 * i / 20 for i in range(20)] + [1.0] * 200
    curve += [1.0 - 0.9 * i / 20 for i in range(20)] + [0.1] * 100
    found = find_plateaus(curve, window=40, tol=0.01)
    assert len(found) == 3
    assert found[0][0] == 0 and 195 <= found[0][1] <= 215
    assert 215 <= found[1][0] <= 230 and 410 <= found[1][1] <= 430
