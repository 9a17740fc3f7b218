"""The one training loop: minibatch steps at a per-step learning rate; growth is its hook.

Search trials (:mod:`morphsearch.search.trial`) and :func:`train` drive a
:class:`GrowingTrainer`. After each step, with a trigger configured, the growth hook asks
it; when it fires (within the caps) the scorer ranks every (morphism, site) candidate on a
fixed scoring batch, the best that fits is applied, the module swapped for the child's,
the optimizer state carried over and a :class:`GrowthEvent` recorded.

>>> cfg = growth.GrowthConfig(steps=300, trigger=growth.LossPlateau(window=50))
>>> result = growth.train(builders.mlp([64, 4, 10]), d, cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Iterator, Mapping
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

__all__ = ["GrowingTrainer", "GrowthConfig", "batches", "cosine_lr", "evaluate", "train"]

Precision = Literal["fp32", "bf16", "fp16"]
_AMP: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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
        precision: ``"fp32"``, or mixed precision under ``torch.autocast`` (``"bf16"``,
            ``"fp16"`` with loss scaling on CUDA).
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
    precision: Precision = "fp32"
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value, valid in (
            ("optimizer", self.optimizer, ("sgd", "adam")),
            ("lr_schedule", self.lr_schedule, ("constant", "cosine")),
            ("precision", self.precision, tuple(_AMP)),
        ):
            if value not in valid:
                raise ConfigError(f"{name} {value!r} must be one of {', '.join(valid)}")
        if self.steps < 1 or self.lr < 0:
            raise ConfigError(f"steps ({self.steps}) must be >= 1 and lr ({self.lr}) >= 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size {self.batch_size} must be >= 1 or None (full batch)")


def cosine_lr(lr: float, step: float, total: int) -> float:
    """Cosine decay: step ``step`` of ``total`` trains at ``lr * (1 + cos(pi * step /
    total)) / 2`` (``lr`` at step 0, towards 0 at the end)."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / max(total, 1)))


def batches(
    data: Dataset | Batch, which: str, batch_size: int | None, *, shuffle: bool, seed: int
) -> Iterator[Batch]:
    """One pass over a split in minibatches (the last one may be short); ``shuffle``
    draws the order from ``seed``. The one place the loop reads data from."""
    if isinstance(data, Dataset):  # the dataset's own loader: in-memory batches are one index
        size = len(getattr(data, which))
        if size == 0:  # an empty split (val_fraction 0): nothing to iterate
            return
        yield from data.loader(which, min(batch_size or size, size), shuffle=shuffle,  # type: ignore[arg-type]
                               seed=seed)
        return
    x, y = data
    if batch_size is None or batch_size >= len(x):
        yield x, y
        return
    order = (torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
             if shuffle else torch.arange(len(x)))  # fmt: skip
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for ``precision`` (a no-op for fp32)."""
    dtype = _AMP[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def evaluate(
    module: torch.nn.Module, data: Dataset | Batch, which: str, *, device: torch.device,
    batch_size: int = 1024, precision: str = "fp32",
) -> tuple[float, float]:
    """Mean loss and accuracy (NaN for regression) of a split, in eval mode, in minibatches."""
    module.eval()
    loss = correct = 0.0
    seen, classes = 0, True
    dtype = next(module.parameters()).dtype
    with torch.no_grad(), autocast(device, precision):
        for x, y in batches(data, which, batch_size, shuffle=False, seed=0):
            x, y = _as_dtype(x, dtype).to(device), _as_dtype(y, dtype).to(device)
            out = module(x)
            loss += float(task_loss(out.float(), y)) * len(x)
            acc = accuracy(out, y)
            classes = classes and acc is not None
            correct += (acc or 0.0) * len(x)
            seen += len(x)
    n = max(seen, 1)
    return loss / n, correct / n if classes else math.nan


def train(
    arch: Architecture, data: Dataset | Batch, config: GrowthConfig, *,
    eval_data: Batch | None = None,
) -> TrainResult:
    """Train ``arch`` on ``data`` (a dataset's train split, or a batch ``(inputs,
    targets)``), growing it as ``config`` says; evaluates on ``eval_data`` or the
    dataset's val split.

    Raises:
        ConfigError: a bad config, or a device that is not available.
        UnknownMorphism: a name in ``config.morphisms`` is not registered.
    """
    return GrowingTrainer(arch, data, config, eval_data=eval_data).run()


class GrowingTrainer:
    """The state of one training run: module, optimizer, step count, growth history.

    ``module``/``optimizer`` may be given (a search trial continuing a parent's or a
    checkpoint's optimizer); ``start_step`` resumes the step count and batch order.
    """

    def __init__(
        self, arch: Architecture, data: Dataset | Batch, config: GrowthConfig, *,
        eval_data: Batch | None = None, module: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None, start_step: int = 0,
    ) -> None:
        self.config, self.data = config, data
        self.device = _device(config.device)
        self.eval_data: Dataset | Batch | None = eval_data if eval_data is not None else (
            data if isinstance(data, Dataset) else None)  # fmt: skip
        self._eval_split = "val" if eval_data is None else "train"
        plain = data.with_augment(None) if isinstance(data, Dataset) else data  # scores see data as is
        x, y = next(batches(plain, "train", config.score_batch_size, shuffle=True,
                            seed=config.seed))  # fmt: skip
        self.score_batch: Batch = (_as_dtype(x, arch.dtype), _as_dtype(y, arch.dtype))
        self.n_train = len(data.train if isinstance(data, Dataset) else data[0])  # type: ignore[arg-type]
        self.trigger = copy.deepcopy(config.trigger)
        self.scorer = copy.deepcopy(config.scorer) if config.scorer else RoundRobin()
        self.arch = arch
        self.module = module if module is not None else arch.to_module(device=self.device)
        self.optimizer = optimizer if optimizer is not None else self._new_optimizer(self.module)
        self.scaler = torch.amp.GradScaler(self.device.type) if (
            config.precision == "fp16" and self.device.type == "cuda") else None  # fmt: skip
        self.step = start_step
        self.losses: list[float] = []
        self.params: list[int] = []
        self.events: list[GrowthEvent] = []
        self.evals: list[EvalRecord] = []
        self.flops = 0
        self.last_growth = -(10**9)
        self.capped = False
        self._stream = self._epoch_stream(start_step)

    # ------------------------------------------------------------------ the loop

    def run(self) -> TrainResult:
        """Train for ``config.steps`` steps (or until the target accuracy)."""
        start = time.perf_counter()
        stopped = False
        every = self.config.eval_every or self.config.steps
        while self.step < self.config.steps and not stopped:
            self.advance(min(every, self.config.steps - self.step))
            if self.step < self.config.steps or self.eval_data is not None:
                stopped = self._record_eval()
        final = self.arch.with_weights_from(self.module)
        return TrainResult(
            final, tuple(self.losses), tuple(self.params), tuple(self.events),
            tuple(self.evals), self.flops, time.perf_counter() - start, stopped,
        )

    def advance(self, n: int) -> float:
        """Take ``n`` steps (each followed by the growth hook); their mean training loss."""
        first = len(self.losses)
        for _ in range(n):
            self._set_lr(self.step)
            self._train_step()
            if self.trigger is not None:
                self._maybe_grow(self.step)
            self.step += 1
        taken = self.losses[first:]
        return sum(taken) / len(taken) if taken else math.nan

    def _epoch_stream(self, step: int) -> Iterator[Batch]:
        """Batches from ``step`` on: epoch ``e`` is shuffled with seed ``seed*1009 + e``,
        so a run resumed at any step sees the batches it would have seen."""
        size = self.config.batch_size
        per_epoch = 1 if size is None else math.ceil(self.n_train / size)
        epoch, skip = divmod(step, per_epoch)
        while True:
            seed = self.config.seed * 1009 + epoch
            stream = batches(self.data, "train", size, shuffle=True, seed=seed)
            for i, batch in enumerate(stream):
                if i >= skip:
                    yield batch
            epoch, skip = epoch + 1, 0

    def _set_lr(self, step: int) -> None:
        if self.config.lr_schedule != "cosine":
            return
        lr = cosine_lr(self.config.lr, step, self.config.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _train_step(self) -> None:
        x, y = next(self._stream)
        x = _as_dtype(x, self.arch.dtype).to(self.device, non_blocking=True)
        y = _as_dtype(y, self.arch.dtype).to(self.device, non_blocking=True)
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.config.precision):
            loss = task_loss(self.module(x), y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.losses.append(float(loss.detach()))
        self.params.append(self.arch.num_params)
        self.flops += 3 * self.arch.flops * len(x)

    def _record_eval(self) -> bool:
        """Record held-out loss/accuracy; True when the target accuracy is reached."""
        if self.eval_data is None:
            return False
        loss, acc = evaluate(self.module, self.eval_data, self._eval_split, device=self.device,
                             precision=self.config.precision)  # fmt: skip
        accuracy_ = None if math.isnan(acc) else acc
        self.evals.append(EvalRecord(self.step - 1, loss, accuracy_, self.arch.num_params,
                                     self.flops))  # fmt: skip
        target = self.config.target_accuracy
        return target is not None and accuracy_ is not None and accuracy_ >= target

    # ------------------------------------------------------------------ the growth hook

    def _maybe_grow(self, step: int) -> None:
        cfg = self.config
        if self.trigger is None or self.capped or step - self.last_growth < cfg.min_steps_between:
            return
        if (cfg.max_growths is not None and len(self.events) >= cfg.max_growths) or (
                cfg.max_params is not None and self.arch.num_params >= cfg.max_params):
            return
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
        result = self._first_fitting(parent, scores)
        if result is None:
            self.capped = True  # every scored candidate is over max_params: stop trying
            return
        child = result.child
        new_module = child.to_module(device=self.device)
        self.optimizer = transfer_optimizer(self.optimizer, self.module, new_module, parent, child)
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

    def _first_fitting(self, parent: Architecture, scores: list[Score]) -> MorphismResult | None:
        cap = self.config.max_params
        for score in scores:
            cand = score.candidate
            result = score.result or morphisms.apply(
                cand.morphism, parent, cand.site, batch=self.score_batch,
                seed=self._growth_seed(), **cand.params,
            )
            if cap is None or result.child.num_params <= cap:
                return result
        return None

    def _eval_loss(self, arch: Architecture) -> float:
        x, y = self.score_batch
        with torch.no_grad():
            out = arch.to_module().eval()(x.to(arch.dtype))
        return float(task_loss(out, y))

    def _new_optimizer(self, module: torch.nn.Module) -> torch.optim.Optimizer:
        cfg, params = self.config, list(module.parameters())
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)  # fmt: skip
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


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
