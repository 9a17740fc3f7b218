"""When to grow: a fixed schedule, a loss plateau, or a growth score above a threshold.

A trigger answers one question each time the trainer asks: grow now? It does not choose
where or how (that is :mod:`morphsearch.growth.scores` and the morphisms). The trainer
calls :meth:`Trigger.reset` right after every growth so that the trigger judges the grown
network on its own losses.

Contract:
    * ``should_grow(step, loss_history, best_score=None)`` is called with the full
      per-step training-loss history (``loss_history[-1]`` is the loss at ``step``);
      it may keep state, and is cheap.
    * ``needs_score``: when true the trainer scores the candidate sites before asking
      and passes the best score (scores cost a few forward/backward passes).
    * ``reset()`` forgets everything seen before the growth that just happened.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from morphsearch.errors import ConfigError
from morphsearch.registry import Registry

__all__ = [
    "TRIGGERS",
    "LossPlateau",
    "Schedule",
    "ScoreThreshold",
    "Trigger",
    "find_plateaus",
    "relative_improvement",
]


class Trigger(abc.ABC):
    """Decides when to grow (see the module docstring for the contract)."""

    needs_score: bool = False

    @abc.abstractmethod
    def should_grow(
        self, step: int, loss_history: Sequence[float], best_score: float | None = None
    ) -> bool:
        """Whether to grow at ``step``.

        Args:
            step: the training step just taken (0-based).
            loss_history: training loss of every step so far.
            best_score: the best candidate's score (only when ``needs_score``).

        Returns:
            True to grow now.
        """

    def reset(self) -> None:  # noqa: B027  (stateless triggers need nothing)
        """Forget the losses seen before the growth that just happened."""

    @property
    def name(self) -> str:
        """Short description stored with each growth event (at most 64 characters)."""
        return type(self).__name__


@dataclass
class Schedule(Trigger):
    """Grow at ``start``, ``start + every``, ... at most ``max_growths`` times.

    The GradMax teacher-student schedule is ``Schedule(start=200, every=200, max_growths=5)``.
    """

    start: int = 0
    every: int = 100
    max_growths: int = 1

    def __post_init__(self) -> None:
        if self.every < 1 or self.start < 0 or self.max_growths < 0:
            raise ConfigError(
                f"Schedule(start={self.start}, every={self.every}, max_growths="
                f"{self.max_growths}): start and max_growths must be >= 0 and every >= 1"
            )

    def should_grow(
        self, step: int, loss_history: Sequence[float], best_score: float | None = None
    ) -> bool:
        offset = step - self.start
        return offset >= 0 and offset % self.every == 0 and offset // self.every < self.max_growths

    @property
    def name(self) -> str:
        return f"schedule(start={self.start},every={self.every})"


def relative_improvement(losses: Sequence[float], window: int) -> float:
    """Relative drop of the loss over the last ``window`` steps, robust to SGD noise.

    Compares the mean of the first and the last quarter of the window:
    ``(early - late) / |early|``. Near 0 on a plateau, near 1 while the loss collapses.

    Raises:
        ConfigError: ``window`` < 4 or longer than ``losses``.
    """
    if window < 4 or window > len(losses):
        raise ConfigError(f"plateau window {window} must be >= 4 and <= {len(losses)} losses")
    recent = losses[-window:]
    q = window // 4
    early = sum(recent[:q]) / q
    late = sum(recent[-q:]) / q
    return (early - late) / max(abs(early), 1e-12)


@dataclass
class LossPlateau(Trigger):
    """Grow when the loss stops improving: the "splitter" loop of the blog post "Saddles,
    Splitting, and Reparameterization: Dynamically Growing Neural Networks" (unsigned, 2026).

    Fires when the relative improvement over the last ``window`` steps (see
    :func:`relative_improvement`) is below ``tol``, the loss is still above ``min_loss``
    (a converged loss at the target is not a saddle), and at least ``window`` steps have
    passed since the last growth.
    """

    window: int = 100
    tol: float = 0.01
    min_loss: float = 0.0
    _start: int = field(default=0, init=False, repr=False)
    _seen: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.window < 4 or self.tol <= 0:
            raise ConfigError(
                f"LossPlateau(window={self.window}, tol={self.tol}): window must be >= 4 and "
                "tol > 0"
            )

    def should_grow(
        self, step: int, loss_history: Sequence[float], best_score: float | None = None
    ) -> bool:
        self._seen = len(loss_history)
        since = loss_history[self._start:]
        if len(since) < self.window or since[-1] <= self.min_loss:
            return False
        return relative_improvement(since, self.window) < self.tol

    def reset(self) -> None:
        self._start = self._seen

    @property
    def name(self) -> str:
        return f"plateau(window={self.window},tol={self.tol:g})"


@dataclass
class ScoreThreshold(Trigger):
    """Grow when the best candidate's score exceeds ``tau`` (SENN's expansion rule).

    Scores are computed every ``check_every`` steps by the trainer (their cost is a few
    passes over a scoring batch); between checks the trigger answers no.
    """

    tau: float
    check_every: int = 10
    needs_score: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        if self.check_every < 1:
            raise ConfigError(f"ScoreThreshold check_every={self.check_every} must be >= 1")

    def should_grow(
        self, step: int, loss_history: Sequence[float], best_score: float | None = None
    ) -> bool:
        return best_score is not None and best_score > self.tau

    def wants_score(self, step: int) -> bool:
        """Whether the trainer should compute scores at ``step``."""
        return step % self.check_every == 0

    @property
    def name(self) -> str:
        return f"score>{self.tau:g}"


def find_plateaus(
    losses: Sequence[float], window: int, tol: float, min_length: int | None = None
) -> list[tuple[int, int]]:
    """Maximal step ranges ``[start, end)`` where the loss is on a plateau.

    A step is on a plateau when the relative improvement over the ``window`` steps
    ending there is below ``tol``; runs shorter than ``min_length`` (default ``window``)
    are dropped. The saddle-to-saddle dynamics of small-initialised deep linear networks
    (Jacot, Ged, Şimşek, Hongler and Gabriel, "Saddle-to-Saddle Dynamics in Deep Linear
    Networks: Small Initialization Training, Symmetry, and Sparsity", 2021) show up as
    several such ranges separated by sharp drops.

    Returns:
        ``(start, end)`` pairs in increasing order; ``start`` is where the window began.
    """
    min_length = window if min_length is None else min_length
    if window < 4:
        raise ConfigError(f"plateau window {window} must be >= 4")
    # Prefix sums make each window's quarter means O(1): the scan is linear in len(losses).
    prefix = [0.0]
    for value in losses:
        prefix.append(prefix[-1] + float(value))
    q = window // 4
    flat = []
    for i in range(len(losses)):
        if i < window - 1:
            flat.append(False)
            continue
        early = (prefix[i - window + 1 + q] - prefix[i - window + 1]) / q
        late = (prefix[i + 1] - prefix[i + 1 - q]) / q
        flat.append((early - late) / max(abs(early), 1e-12) < tol)
    plateaus: list[tuple[int, int]] = []
    i = 0
    while i < len(flat):
        if not flat[i]:
            i += 1
            continue
        j = i
        while j < len(flat) and flat[j]:
            j += 1
        start = i - window + 1
        if j - start >= min_length:
            plateaus.append((start, j))
        i = j
    return plateaus


@dataclass(frozen=True)
class TriggerPlan:
    """What a config says about a trigger, for the registered factories below."""

    steps: int  # the run's optimizer steps
    max_events: int
    tau: float = 0.0
    check_every: int = 10


TRIGGERS: Registry[Callable[[TriggerPlan], Trigger]] = Registry("trigger")


@TRIGGERS.register("schedule")
def _schedule(plan: TriggerPlan) -> Trigger:
    """``max_events`` growths evenly spaced over the run."""
    every = max(1, plan.steps // (plan.max_events + 1))
    return Schedule(start=every, every=every, max_growths=plan.max_events)


@TRIGGERS.register("plateau")
def _plateau(plan: TriggerPlan) -> Trigger:
    return LossPlateau(window=max(10, plan.steps // 10))


@TRIGGERS.register("score")
def _score(plan: TriggerPlan) -> Trigger:
    return ScoreThreshold(tau=plan.tau, check_every=plan.check_every)
