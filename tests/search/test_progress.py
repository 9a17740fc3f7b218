"""Search progress: plain lines for a scripted sequence of trial events, the choice of
live vs plain output, the live view, and the hooks matching Ray Tune's Callback API."""

from __future__ import annotations

import inspect
import io
import pickle
from types import SimpleNamespace

import pytest

from morphsearch.search.progress import ProgressState, SearchProgress, format_duration, use_live
from morphsearch.search.protocol import EpochReport, TrialReport


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def _trial(trial_id: str) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id)


def test_plain_lines_for_a_sequence_of_trial_events() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = SearchProgress("val_accuracy", "max", stream=out, live=False, clock=clock)
    progress.setup(num_samples=4, total_num_samples=4)
    t1, t2, t3 = _trial("t1"), _trial("t2"), _trial("t3")
    progress.on_trial_start(0, [], t1)
    progress.on_trial_start(0, [], t2)
    clock.now += 10
    progress.on_trial_result(1, [], t1, {"val_accuracy": 0.5, "epoch": 1})
    progress.on_trial_result(1, [], t2, {"val_accuracy": 0.4, "epoch": 1})  # not a new best
    progress.on_trial_result(2, [], t2, {"val_accuracy": float("nan")})  # ignored
    clock.now += 10
    progress.on_trial_complete(2, [], t1)
    progress.on_trial_start(2, [], t3)
    clock.now += 20
    progress.on_trial_error(3, [], t2)
    progress.on_trial_result(3, [], t3, {"val_accuracy": 0.75})
    clock.now += 65
    progress.on_trial_complete(4, [], t3)
    progress.on_experiment_end([])
    assert out.getvalue().splitlines() == [
        "[00:00] trial t1 started | 0/4 done, 1 running, 0 errored | best val_accuracy - | ? left",
        "[00:00] trial t2 started | 0/4 done, 2 running, 0 errored | best val_accuracy - | ? left",
        "[00:10] new best val_accuracy 0.5 (trial t1) | 0/4 done, 2 running, 0 errored | "
        "best val_accuracy 0.5 (t1) | ? left",
        "[00:20] trial t1 done | 1/4 done, 1 running, 0 errored | "
        "best val_accuracy 0.5 (t1) | 01:00 left",
        "[00:20] trial t3 started | 1/4 done, 2 running, 0 errored | "
        "best val_accuracy 0.5 (t1) | 01:00 left",
        "[00:40] trial t2 failed | 1/4 done, 1 running, 1 errored | "
        "best val_accuracy 0.5 (t1) | 00:40 left",
        "[00:40] new best val_accuracy 0.75 (trial t3) | 1/4 done, 1 running, 1 errored | "
        "best val_accuracy 0.75 (t3) | 00:40 left",
        "[01:45] trial t3 done | 2/4 done, 0 running, 1 errored | "
        "best val_accuracy 0.75 (t3) | 00:35 left",
        "[01:45] search finished | 2/4 done, 0 running, 1 errored | "
        "best val_accuracy 0.75 (t3) | 00:35 left",
    ]


def test_min_mode_and_time_budget_cap() -> None:
    clock = FakeClock()
    state = ProgressState("val_loss", "min", total=10, time_budget_s=60, clock=clock)
    assert state.result("a", {"val_loss": 0.5}) and not state.result("b", {"val_loss": 0.7})
    assert state.result("b", {"val_loss": 0.2}) and state.best == (0.2, "b")
    assert not state.result("c", {"val_loss": "n/a"}) and not state.result("c", {"x": 1})
    # epochs batched into a report count too (the best may be an earlier epoch)
    def epoch(n: int, val_loss: float) -> EpochReport:
        return EpochReport.from_values({"epoch": n, "val_loss": val_loss})

    batched = TrialReport(epoch(3, 0.3), "s/c", None, "c.safetensors", "h", 1, 1,
                          history=(epoch(1, 0.25), epoch(2, 0.1))).to_result()
    assert state.result("c", batched) and state.best == (0.1, "c")
    clock.now += 30
    assert state.eta() == 30  # no trial finished yet: the time budget bounds it
    state.finished("a")
    assert state.eta() == 30  # 9 trials x 30 s would be 270 s; the budget leaves 30


def test_format_duration() -> None:
    assert [format_duration(s) for s in (None, 0, 59.6, 75, 3725)] == [
        "?", "00:00", "01:00", "01:15", "1:02:05"
    ]  # fmt: skip


def test_live_only_on_a_terminal_outside_ci() -> None:
    assert use_live(TtyStream(), {}) is True
    assert use_live(TtyStream(), {"CI": "true"}) is False
    assert use_live(io.StringIO(), {}) is False


def test_live_view_redraws_in_place_and_keeps_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    out, clock = TtyStream(), FakeClock()
    progress = SearchProgress("acc", stream=out, total=2, clock=clock)
    progress.setup()
    try:
        assert progress._live is not None
        progress.on_trial_start(0, [], _trial("t1"))
        progress.on_trial_result(1, [], _trial("t1"), {"acc": 0.9})
        progress.on_trial_error(1, [], _trial("t1"))
    finally:
        progress.on_experiment_end([])
    text = out.getvalue()
    assert "\x1b[" in text  # terminal control sequences: redrawn, not appended lines
    assert "trial t1 failed" in text and "new best acc 0.9 (trial t1)" in text
    assert "best acc 0.9 (t1)" in text and "1 errored" in text
    assert progress._live is None


def test_callback_survives_pickling_and_matches_ray_hooks() -> None:
    from ray.tune import Callback

    progress = SearchProgress("acc", stream=io.StringIO(), live=False)
    clone = pickle.loads(pickle.dumps(progress))  # Tune pickles the run config
    assert clone.state.metric == "acc" and clone._stream is None
    for name in ("setup", "on_trial_start", "on_trial_result", "on_trial_complete",
                 "on_trial_error", "on_experiment_end"):  # fmt: skip
        ours = inspect.signature(getattr(SearchProgress, name)).parameters
        theirs = inspect.signature(getattr(Callback, name)).parameters
        assert list(ours)[: len(theirs) - 1] == list(theirs)[: len(theirs) - 1], name
        assert any(p.kind is p.VAR_KEYWORD for p in ours.values()), name


def test_last_line_of_a_resumed_search_counts_every_finished_trial() -> None:
    clock, out = FakeClock(), io.StringIO()
    first = SearchProgress("val_accuracy", "max", stream=out, live=False, clock=clock)
    first.setup(num_samples=4, total_num_samples=4)
    for name in ("t1", "t2"):
        first.on_trial_start(0, [], _trial(name))
    first.on_trial_complete(1, [], _trial("t1"))
    # the driver is killed after t2 finished but before Tune's next snapshot; the
    # resumed driver restores this callback as pickled, and Tune restores t2 as
    # finished without calling on_trial_complete for it
    resumed = pickle.loads(pickle.dumps(first))
    resumed._stream = out
    resumed.setup(num_samples=4, total_num_samples=4)
    for name in ("t3", "t4"):
        resumed.on_trial_start(0, [], _trial(name))
        resumed.on_trial_complete(1, [], _trial(name))
    statuses = ["TERMINATED", "TERMINATED", "TERMINATED", "TERMINATED"]
    trials = [SimpleNamespace(trial_id=f"t{i + 1}", status=s) for i, s in enumerate(statuses)]
    resumed.on_experiment_end(trials)
    last = out.getvalue().splitlines()[-1]
    assert "search finished | 4/4 done, 0 running, 0 errored" in last and "00:00 left" in last
