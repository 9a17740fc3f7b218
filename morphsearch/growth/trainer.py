"""A training loop that grows the network when a trigger fires.

Each step trains the compiled module on a minibatch. When growth is allowed (caps, the
minimum gap since the last growth) and the trigger says so, the scorer ranks every
(morphism, site) candidate on a fixed scoring batch, the best one that fits the parameter
cap is applied with ``morphisms.apply``, the module is swapped for the child's, the
optimizer state is carried over, and a :class:`GrowthEvent` is recorded.

>>> from morphsearch import builders, data, growth
>>> d = data.load_dataset("digits")
>>> cfg = growth.GrowthConfig(steps=300, trigger=growth.LossPlateau(window=50))
>>> result = growth.train(builders.mlp([64, 4, 10]), d, cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from morphsearch import morphisms
from morphsearch.arch import Architecture
from morphsearch.data import Dataset
from morphsearch.errors import ConfigError
from morphsearch.growth.events import EvalRecord, GrowthEvent, TrainResult
from morphsearch.growth.scores import RoundRobin, Score, Scorer, candidates
from morphsearch.growth.triggers import ScoreThreshold, Trigger
from morphsearch.losses import accuracy, task_loss
from morphsearch.morphisms import Batch, MorphismResult
from morphsearch.morphisms.optim import transfer_optimizer

__all__ = ["GrowingTrainer", "GrowthConfig", "train"]


@dataclass(frozen=True)
class GrowthConfig:
    """How to train and grow. Triggers and scorers are copied per run, never mutated.

    Attributes:
        steps: optimizer steps in total.
        optimizer: ``"sgd"`` or ``"adam"``; ``lr``, ``momentum`` (SGD), ``weight_decay``.
        lr_schedule: ``"constant"``, or ``"cosine"``: step ``t`` of ``steps`` trains at
            ``lr * (1 + cos(pi * t / steps)) / 2`` (across growths: the schedule follows
            the step count, not the architecture).
        batch_size: minibatch size; None trains full-batch.
        trigger: when to grow; None never grows.
        scorer: where to grow; None cycles through the candidates (:class:`RoundRobin`).
        morphisms: the morphisms that may be applied; ``morphism_params`` their parameters.
        max_params, max_growths, min_steps_between: caps on growth.
        score_batch_size: size of the fixed training subset used to score and to measure
            the loss before and after growth.
        eval_every: evaluate on held-out data every this many steps (0: only at the end).
        target_accuracy: stop once held-out accuracy reaches it (classification).
        device: ``"cpu"``, ``"cuda"``...; None uses CUDA when present.
        seed: seeds minibatch order and every morphism.
    """

    steps: int = 1000
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = 1e-2
    lr_schedule: Literal["constant", "cosine"] = "constant"
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int | None = 64
    trigger: Trigger | None = None
    scorer: Scorer | None = None
    morphisms: tuple[str, ...] = ("widen.random",)
    morphism_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    max_params: int | None = None
    max_growths: int | None = None
    min_steps_between: int = 0
    score_batch_size: int = 256
    eval_every: int = 0
    target_accuracy: float | None = None
    device: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"optimizer {self.optimizer!r} must be 'sgd' or 'adam'")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(
                f"lr_schedule {self.lr_schedule!r} must be 'constant' or 'cosine'"
            )
        if self.steps < 1 or self.lr <= 0:
            raise ConfigError(f"steps ({self.steps}) must be >= 1 and lr ({self.lr}) > 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size {self.batch_size} must be >= 1 or None (full batch)")


def cosine_lr(lr: float, step: float, total: int) -> float:
    """Cosine decay: step ``step`` of ``total`` trains at ``lr * (1 + cos(pi * step /
    total)) / 2`` (``lr`` at step 0, towards 0 at the end)."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / max(total, 1)))


def train(
    arch: Architecture,
    data: Dataset | Batch,
    config: GrowthConfig,
    *,
    eval_data: Batch | None = None,
) -> TrainResult:
    """Train ``arch`` on ``data``, growing it as ``config`` says.

    Args:
        arch: the seed architecture (its weights are the starting point).
        data: a :class:`~morphsearch.data.Dataset` (trains on its train split, evaluates
            on its val split) or a training batch ``(inputs, targets)``.
        config: see :class:`GrowthConfig`.
        eval_data: held-out ``(inputs, targets)``; overrides the dataset's val split.

    Returns:
        A :class:`TrainResult` with the final architecture and its trained weights.

    Raises:
        ConfigError: a bad config, or a device that is not available.
        UnknownMorphism: a name in ``config.morphisms`` is not registered.
    """
    return GrowingTrainer(arch, data, config, eval_data=eval_data).run()


class GrowingTrainer:
    """The state of one growing training run; :func:`train` is the usual entry point."""

    def __init__(
        self,
        arch: Architecture,
        data: Dataset | Batch,
        config: GrowthConfig,
        *,
        eval_data: Batch | None = None,
    ) -> None:
        self.config = config
        self.device = _device(config.device)
        x, y = data.split("train") if isinstance(data, Dataset) else data
        if eval_data is None and isinstance(data, Dataset):
            eval_data = data.split("val")
        x, y = _as_dtype(x, arch.dtype), _as_dtype(y, arch.dtype)
        self.x, self.y = x.to(self.device), y.to(self.device)
        self.eval_data = None if eval_data is None else tuple(
            _as_dtype(t, arch.dtype) for t in eval_data
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        perm = torch.randperm(len(x), generator=self.generator)[: config.score_batch_size]
        self.score_batch: Batch = (x[perm].cpu(), y[perm].cpu())
        self.trigger = copy.deepcopy(config.trigger)
        self.scorer = copy.deepcopy(config.scorer) if config.scorer else RoundRobin()
        self.arch = arch
        self.module = arch.to_module(device=self.device)
        self.optimizer = self._new_optimizer(self.module)
        self.losses: list[float] = []
        self.params: list[int] = []
        self.events: list[GrowthEvent] = []
        self.evals: list[EvalRecord] = []
        self.flops = 0
        self.last_growth = -(10**9)
        self.capped = False
        self._order = torch.empty(0, dtype=torch.long)

    # ------------------------------------------------------------------ the loop

    def run(self) -> TrainResult:
        """Train for ``config.steps`` steps (or until the target accuracy)."""
        start = time.perf_counter()
        stopped = False
        for step in range(self.config.steps):
            self._set_lr(step)
            self._train_step()
            self._maybe_grow(step)
            every = self.config.eval_every
            if every and (step + 1) % every == 0 and self._evaluate(step):
                stopped = True
                break
        if not stopped and self.eval_data is not None:
            self._evaluate(len(self.losses) - 1)
        final = self.arch.with_weights_from(self.module)
        return TrainResult(
            final, tuple(self.losses), tuple(self.params), tuple(self.events),
            tuple(self.evals), self.flops, time.perf_counter() - start, stopped,
        )

    def _next_batch(self) -> Batch:
        size = self.config.batch_size
        if size is None or size >= len(self.x):
            return self.x, self.y
        if len(self._order) < size:  # a new epoch: reshuffle
            self._order = torch.randperm(len(self.x), generator=self.generator)
        idx, self._order = self._order[:size], self._order[size:]
        idx = idx.to(self.device)
        return self.x[idx], self.y[idx]

    def _set_lr(self, step: int) -> None:
        if self.config.lr_schedule != "cosine":
            return
        lr = cosine_lr(self.config.lr, step, self.config.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _train_step(self) -> None:
        x, y = self._next_batch()
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = task_loss(self.module(x), y)
        loss.backward()
        self.optimizer.step()
        self.losses.append(float(loss.detach()))
        self.params.append(self.arch.num_params)
        self.flops += 3 * self.arch.flops * len(x)

    def _evaluate(self, step: int) -> bool:
        """Record held-out loss/accuracy; True when the target accuracy is reached."""
        if self.eval_data is None:
            return False
        x, y = (t.to(self.device) for t in self.eval_data)
        self.module.eval()
        with torch.no_grad():
            out = self.module(x)
        acc = accuracy(out, y)
        loss = float(task_loss(out, y))
        self.evals.append(EvalRecord(step, loss, acc, self.arch.num_params, self.flops))
        target = self.config.target_accuracy
        return target is not None and acc is not None and acc >= target

    # ------------------------------------------------------------------ growth

    def _growth_allowed(self, step: int) -> bool:
        cfg = self.config
        return not (
            self.trigger is None
            or self.capped
            or step - self.last_growth < cfg.min_steps_between
            or (cfg.max_growths is not None and len(self.events) >= cfg.max_growths)
            or (cfg.max_params is not None and self.arch.num_params >= cfg.max_params)
        )

    def _maybe_grow(self, step: int) -> None:
        if not self._growth_allowed(step):
            return
        assert self.trigger is not None  # checked by _growth_allowed
        scores: list[Score] | None = None
        best: float | None = None
        if self.trigger.needs_score:
            if isinstance(self.trigger, ScoreThreshold) and not self.trigger.wants_score(step):
                return
            scores = self._score()
            best = scores[0].value if scores else None
        if not self.trigger.should_grow(step, self.losses, best):
            return
        self._grow(step, scores if scores is not None else self._score())
        self.trigger.reset()

    def _score(self) -> list[Score]:
        parent = self.arch.with_weights_from(self.module)
        cands = candidates(parent, self.config.morphisms, self.config.morphism_params)
        return self.scorer.score(parent, self.score_batch, cands, seed=self._growth_seed())

    def _growth_seed(self) -> int:
        return self.config.seed * 100_003 + len(self.events)

    def _grow(self, step: int, scores: list[Score]) -> None:
        if not scores:
            return  # no candidate could be scored now; that is not a size cap
        parent = self.arch.with_weights_from(self.module)
        chosen = self._first_fitting(parent, scores)
        if chosen is None:
            self.capped = True  # every scored candidate is over max_params: stop trying
            return
        _, result = chosen
        child = result.child
        new_module = child.to_module(device=self.device)
        self.optimizer = self._carry_optimizer(new_module, parent, child)
        self.events.append(GrowthEvent(
            step=step, trigger=self.trigger.name if self.trigger else "",
            site=result.record.site, morphism=result.record.to_json(),
            scores={s.candidate.key: s.value for s in scores},
            loss_before=self._eval_loss(parent), loss_after=self._eval_loss(child),
            params_before=parent.num_params, params_after=child.num_params,
            parent_hash=parent.structure_hash, child_hash=child.structure_hash,
            parent=parent, child=child,
        ))
        self.arch, self.module = child, new_module
        self.last_growth = step

    def _first_fitting(
        self, parent: Architecture, scores: list[Score]
    ) -> tuple[Score, MorphismResult] | None:
        cap = self.config.max_params
        for score in scores:
            cand = score.candidate
            result = score.result or morphisms.apply(
                cand.morphism, parent, cand.site, batch=self.score_batch,
                seed=self._growth_seed(), **cand.params,
            )
            if cap is None or result.child.num_params <= cap:
                return score, result
        return None

    def _eval_loss(self, arch: Architecture) -> float:
        x, y = self.score_batch
        with torch.no_grad():
            out = arch.to_module().eval()(x.to(arch.dtype))
        return float(task_loss(out, y))

    # ------------------------------------------------------------------ optimizer

    def _new_optimizer(self, module: torch.nn.Module) -> torch.optim.Optimizer:
        cfg = self.config
        params = list(module.parameters())
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def _carry_optimizer(
        self, new_module: torch.nn.Module, parent: Architecture, child: Architecture
    ) -> torch.optim.Optimizer:
        return transfer_optimizer(self.optimizer, self.module, new_module, parent, child)


def _as_dtype(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # Inputs and regression targets follow the network's float dtype; labels stay int64.
    return t.to(dtype) if t.is_floating_point() else t


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} is not available: CUDA is not present; use 'cpu'")
    return device
