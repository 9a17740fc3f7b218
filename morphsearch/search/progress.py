"""A concise live view of a running search, as a Ray Tune ``Callback`` on the driver.

In a terminal it is a rich ``Live`` block that refreshes in place: trials done / running /
errored out of the total, the best value so far and its trial, elapsed time and an
estimate of the time left. When stdout is not a terminal or ``CI`` is set (logs, CI
runners, ``nohup``), it degrades to one plain line per event (a trial started, finished
or failed, a new best value), so logs stay readable and grep-able.

The counting lives in :class:`ProgressState`, which knows nothing of Ray; the callback
only translates Tune's hooks into its events.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

from ray.tune import Callback

from morphsearch.search.protocol import TrialReport, is_trial_result

__all__ = ["ProgressState", "SearchProgress", "format_duration", "use_live"]


def format_duration(seconds: float | None) -> str:
    """``75`` -> ``01:15``; ``3725`` -> ``1:02:05``; ``None`` -> ``?``."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def use_live(stream: IO[str], environ: dict[str, str] | None = None) -> bool:
    """A live (redrawn) view only on a terminal, and never under CI."""
    env = os.environ if environ is None else environ
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not env.get("CI")


class ProgressState:
    """Counts of trials and the best value so far.

    Args:
        metric, mode: what "best" means (``mode`` is ``max`` or ``min``).
        total: the number of trials the search will run, if known.
        time_budget_s: the search's time budget, which caps the estimate of time left.
        clock: seconds, monotonic (injectable for tests).
    """

    # (done, errored) trials Tune lost on a resume; a class default, because a search
    # started by an older version unpickles this state without running __init__
    carried: tuple[int, int] = (0, 0)

    def __init__(
        self,
        metric: str,
        mode: str = "max",
        *,
        total: int | None = None,
        time_budget_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metric, self.mode, self.total = metric, mode, total
        self.time_budget_s = time_budget_s
        self._clock = clock
        self.start = clock()
        self.running: set[str] = set()
        self.done = 0
        self.errored = 0
        self.best: tuple[float, str] | None = None

    def started(self, trial_id: str) -> None:
        self.running.add(trial_id)

    def result(self, trial_id: str, result: dict[str, Any]) -> bool:
        """Take a reported result (and the epochs batched into it); True on a new best."""
        if not is_trial_result(result):
            return self._value(trial_id, result.get(self.metric))
        report = TrialReport.from_result(result)
        values = [r.value(self.metric) for r in (*report.evaluations, report.latest)]
        if self.metric in ("params", "flops"):  # per architecture, not per evaluation
            values = [result.get(self.metric)]
        return any([self._value(trial_id, v) for v in values])

    def _value(self, trial_id: str, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        value = float(value)
        if math.isnan(value):
            return False
        if self.best is not None:
            better = value > self.best[0] if self.mode == "max" else value < self.best[0]
            if not better:
                return False
        self.best = (value, trial_id)
        return True

    def finished(self, trial_id: str, *, error: bool = False) -> None:
        self.running.discard(trial_id)
        if error:
            self.errored += 1
        else:
            self.done += 1

    def reconcile(self, statuses: list[str]) -> None:
        """Take the counts from Tune's final trial list. A resumed search restores this
        state from a snapshot taken before the kill, and Tune reports no completion for
        trials it restored as finished: without this the last line would undercount."""
        self.running.clear()
        self.done = self.carried[0] + sum(1 for status in statuses if status == "TERMINATED")
        self.errored = self.carried[1] + sum(1 for status in statuses if status == "ERROR")

    def carry(self, statuses: Iterable[str]) -> None:
        """Count trials that finished before a resume and that Tune's snapshot missed
        (lineage has them, Tune's trial list never will)."""
        statuses = list(statuses)
        errored = sum(1 for status in statuses if status == "ERROR")
        self.carried = (self.carried[0] + len(statuses) - errored, self.carried[1] + errored)
        self.done += len(statuses) - errored
        self.errored += errored

    def elapsed(self) -> float:
        return self._clock() - self.start

    def eta(self) -> float | None:
        """Seconds left: the mean time per finished trial times the trials left (capped by
        the time budget); ``None`` before the first trial ends or with no total."""
        elapsed = self.elapsed()
        left_by_budget = (
            max(0.0, self.time_budget_s - elapsed) if self.time_budget_s is not None else None
        )
        finished = self.done + self.errored
        if self.total is None or finished == 0:
            return left_by_budget
        estimate = elapsed / finished * max(0, self.total - finished)
        return estimate if left_by_budget is None else min(estimate, left_by_budget)

    def best_text(self) -> str:
        if self.best is None:
            return f"best {self.metric} -"
        return f"best {self.metric} {self.best[0]:.4g} ({self.best[1]})"

    def status(self) -> str:
        """``2/8 done, 1 running, 1 errored | best val_accuracy 0.91 (t2) | 00:30 left``."""
        of = f"/{self.total}" if self.total is not None else ""
        return (
            f"{self.done}{of} done, {len(self.running)} running, {self.errored} errored | "
            f"{self.best_text()} | {format_duration(self.eta())} left"
        )

    def line(self, event: str) -> str:
        """One plain line: elapsed time, the event, then the status."""
        return f"[{format_duration(self.elapsed())}] {event} | {self.status()}"


class SearchProgress(Callback):
    """Ray Tune callback that shows :class:`ProgressState` live or as plain lines.

    Args:
        metric, mode, total, time_budget_s: see :class:`ProgressState`; ``total``
            defaults to the ``total_num_samples`` Tune passes to :meth:`setup`.
        stream: where to write (default: stdout at the time of writing).
        live: force the live view on or off (default: :func:`use_live`).
        clock: injectable clock for tests.
    """

    def __init__(
        self,
        metric: str,
        mode: str = "max",
        *,
        total: int | None = None,
        time_budget_s: float | None = None,
        stream: IO[str] | None = None,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = ProgressState(metric, mode, total=total, time_budget_s=time_budget_s,
                                   clock=clock)  # fmt: skip
        self._stream = stream
        self._live_wanted = live
        self._live: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the run config (callbacks included) into its experiment folder;
        # streams and rich's refresh thread cannot be pickled and mean nothing on resume.
        state = self.__dict__.copy()
        state.update(_stream=None, _live=None)
        return state

    @property
    def stream(self) -> IO[str]:
        return self._stream if self._stream is not None else sys.stdout

    def setup(self, stop: Any = None, num_samples: int | None = None,
              total_num_samples: int | None = None, **info: Any) -> None:  # fmt: skip
        if self.state.total is None and total_num_samples:
            self.state.total = int(total_num_samples)
        self.state.start = self.state._clock()
        live = use_live(self.stream) if self._live_wanted is None else self._live_wanted
        if live and self._live is None:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.stream)
            self._live = Live(get_renderable=self._render, console=console,
                              refresh_per_second=2, transient=False)  # fmt: skip
            self._live.start()

    def _render(self) -> Any:
        from rich.text import Text

        state = self.state
        return Text.assemble(
            ("search ", "bold"), (format_duration(state.elapsed()), "cyan"), "  ",
            state.status().replace(" | ", "  |  "),
        )  # fmt: skip

    def _event(self, text: str, *, important: bool = True) -> None:
        """Plain mode: one line per event. Live mode: redraw, and keep important events
        (failures, new bests) above the live block."""
        if self._live is not None:
            if important:
                self._live.console.print(f"[{format_duration(self.state.elapsed())}] {text}",
                                         markup=False, highlight=False)  # fmt: skip
            self._live.refresh()
            return
        print(self.state.line(text), file=self.stream, flush=True)

    def carry(self, statuses: Iterable[str]) -> None:
        """See :meth:`ProgressState.carry`."""
        self.state.carry(statuses)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.state.started(str(trial.trial_id))
        self._event(f"trial {trial.trial_id} started", important=False)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any,
                        result: dict[str, Any], **info: Any) -> None:  # fmt: skip
        if self.state.result(str(trial.trial_id), result):
            value = self.state.best[0] if self.state.best else float("nan")
            self._event(f"new best {self.state.metric} {value:.4g} (trial {trial.trial_id})")
        elif self._live is not None:
            self._live.refresh()

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any,
                          **info: Any) -> None:  # fmt: skip
        self.state.finished(str(trial.trial_id))
        self._event(f"trial {trial.trial_id} done", important=False)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.state.finished(str(trial.trial_id), error=True)
        self._event(f"trial {trial.trial_id} failed")

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        if trials:  # the last line agrees with the summary, resumed or not
            self.state.reconcile([str(getattr(t, "status", "")) for t in trials])
        self._event("search finished")
        if self._live is not None:
            self._live.stop()
            self._live = None
