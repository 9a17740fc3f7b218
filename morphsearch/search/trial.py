"""One search trial, on any worker: grow the child, train it, report, keep its best weights.

:func:`run_trial` loads the parent from the artifact store, applies the planned morphism
once (refusing a child whose structure hash is not the driver's plan) and trains with the
one step loop (:class:`~morphsearch.growth.trainer.GrowingTrainer`: per-step lr, growth as
its hook). Every ``eval_every`` steps it evaluates, reports (batched by ``report_every_s``;
ASHA's rungs always) and checkpoints (every ``checkpoint_every_s``); it keeps the weights
of its best evaluation by the search's first objective (what lineage ranks it by) and
saves those. Workers never touch lineage; Ray stays in :mod:`.trainable` (a
:class:`Session` stands between). Inheritance is measured: a child's ``first_batch_loss``
(probe batch, before any update) equals its parent's kept ``final_loss`` (unless
``selection.shrink_perturb`` rescales the child before it trains).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import tempfile
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import torch

from morphsearch import artifacts, morphisms
from morphsearch.arch import Architecture
from morphsearch.data import Augment, Dataset, load_dataset
from morphsearch.errors import SearchError, WeightsError
from morphsearch.growth import warm_start
from morphsearch.growth.trainer import GrowingTrainer, evaluate
from morphsearch.losses import task_loss
from morphsearch.morphisms import Batch
from morphsearch.morphisms._registry import PROBE_SIZE
from morphsearch.morphisms.optim import transfer_optimizer
from morphsearch.search.config import TrialGrowthConfig
from morphsearch.search.growing import event_record, loop_config
from morphsearch.search.protocol import EpochReport, TrialPlan, TrialReport

__all__ = ["Session", "TrialSetup", "child_arch_id", "morphism_flops", "run_trial"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of one search shares (budgets already resolved into steps)."""

    search: str
    artifacts_uri: str
    dataset: str
    dataset_options: tuple[tuple[str, Any], ...]
    data_seed: int
    batch_size: int
    steps: int  # the seed's (and every non-inheriting trial's) budget
    eval_every: int  # steps between evaluations
    child_steps: int | None = None  # an inheriting child of a trained parent (None: steps)
    cpus: float = 1.0
    gpus: float = 0.0
    precision: str = "fp32"
    growth: TrialGrowthConfig = field(default_factory=TrialGrowthConfig)
    checkpoint_every_s: float = 10.0
    report_every_s: float = 0.0  # report to Tune at most this often (0: every evaluation)
    report_epochs: tuple[int, ...] = ()  # evaluations always reported (ASHA's rungs)
    inherit_weights: bool = True
    shrink_perturb: tuple[float, float] | None = None  # an inheriting child's start
    augment: Augment | None = None  # training batches only (dataset.augment)
    patience: int | None = None  # evaluations without a gain before stopping (None: never)
    monitor: str = "val_loss"  # what "best" means: kept weights and patience
    monitor_mode: str = "min"

    def steps_for(self, plan: TrialPlan) -> int:
        """Fine-tuning for an inheriting child of a trained parent, else the full budget."""
        fine_tune = plan.morphism is not None and plan.fine_tune and self.inherit_weights
        return self.child_steps if fine_tune and self.child_steps else self.steps


class Session(Protocol):
    """The trial's link to its runner (Ray Tune in production, a list in tests)."""

    trial_id: str

    def checkpoint_dir(self) -> Path | None:
        """The folder of the checkpoint to resume from, if any."""

    def report(self, result: dict[str, Any], folder: Path | None) -> None:
        """Report one result, with a checkpoint folder when given."""

    def node_id(self) -> str | None:
        """Where the trial runs."""


@dataclass
class _State:
    """What a checkpoint keeps besides the weights (JSON)."""

    child: dict[str, Any]  # the trial's child before growth: structure_hash, params, flops
    morphisms: list[dict[str, Any]]
    train_flops: int
    first_batch_loss: float | None = None
    step: int = 0
    epoch: int = 0
    best: float | None = None
    best_epoch: int | None = None
    kept_report: dict[str, Any] | None = None  # the EpochReport of the kept weights
    stale: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)


def child_arch_id(search: str, trial_id: str) -> str:
    return f"{search}/{trial_id}"  # the trial's child in lineage


@functools.lru_cache(maxsize=2)
def _dataset(name: str, options: tuple[tuple[str, Any], ...], seed: int) -> Dataset:
    # cached per worker process: with reuse_actors, later trials skip the load
    return load_dataset(name, seed=seed, **dict(options))


def probe_batch(data: Dataset, batch_size: int) -> Batch:
    """The fixed batch every trial measures inheritance on (first training samples)."""
    x, y = data.split("train")
    return x[:batch_size], y[:batch_size]


def morphism_flops(name: str, parent: Architecture, child: Architecture, batch: int) -> int:
    """FLOPs of applying a morphism on a probe batch of ``batch`` samples: parent and
    child forward on up to ``PROBE_SIZE`` samples (the preservation check), plus one
    forward+backward pass (3x forward) of the parent for a gradient-based morphism."""
    flops = (parent.flops + child.flops) * min(batch, PROBE_SIZE)
    if morphisms.get(name).needs_batch:
        flops += 3 * parent.flops * batch
    return int(flops)


def grow_child(
    plan: TrialPlan, probe: Batch, parent: Architecture, inherit: bool = True,
    shrink_perturb: tuple[float, float] | None = None,
) -> tuple[Architecture, list[dict[str, Any]], int]:
    """The trial's child, its morphism records and the FLOPs spent growing it (an
    inheriting child shrunk and perturbed when ``shrink_perturb`` is given).

    Raises:
        SearchError: the child's structure is not the one the driver planned.
    """
    if plan.morphism is None:
        return parent, [], 0
    planned = plan.morphism
    result = morphisms.apply(planned.name, parent, planned.site, batch=probe, seed=planned.seed,
                             **dict(planned.params))  # fmt: skip
    child = result.child
    expected = plan.child_structure_hash
    if expected is not None and child.structure_hash != expected:
        raise SearchError(
            f"{planned.name} at {planned.site!r} of {plan.parent_id} built a child with "
            f"structure {child.structure_hash[:12]}, not the planned {expected[:12]}; the "
            "morphism's plan() and transform() disagree (a bug in that morphism)"
        )
    spent = morphism_flops(planned.name, parent, child, len(probe[0]))
    if not inherit:  # the same graph from a fresh initialisation: the control for inheritance
        child = Architecture(child.editable_graph(), seed=plan.trial_seed, dtype=child.dtype)
    elif shrink_perturb is not None:  # every inheriting child (see SelectionConfig)
        child = warm_start.shrink_perturb(child, *shrink_perturb, seed=plan.trial_seed)
    return child, [result.record.to_json()], spent


def make_optimizer(
    plan: TrialPlan, setup: TrialSetup, parent: Architecture, child: Architecture,
    module: torch.nn.Module,
) -> torch.optim.Optimizer:
    """The trial's Adam at ``plan.lr``: fresh, or continuing the parent's saved state
    (``inherit_optimizer``; moments of added units start at zero)."""
    fresh = torch.optim.Adam(module.parameters(), lr=plan.lr)
    if not (plan.morphism and plan.inherit_optimizer and setup.inherit_weights):
        return fresh
    saved = artifacts.load_optimizer(plan.parent_uri)
    if saved is None:  # the untrained seed
        return fresh
    parent_module = parent.to_module(device=next(module.parameters()).device)
    previous = torch.optim.Adam(parent_module.parameters(), lr=plan.lr)
    previous.load_state_dict(saved["state"])
    carried = transfer_optimizer(previous, parent_module, module, parent, child)
    for group in carried.param_groups:
        group["lr"] = plan.lr
    return carried


def trial_device(setup: TrialSetup) -> torch.device:
    """CUDA when the trial was given a GPU share (``resources.gpus > 0``), else the CPU."""
    if setup.gpus > 0 and not torch.cuda.is_available():
        raise SearchError("resources.gpus > 0 but this worker has no CUDA device; "
                          "set resources.gpus: 0 or run on a GPU node")  # fmt: skip
    return torch.device("cuda" if setup.gpus > 0 else "cpu")


def run_trial(plan: TrialPlan, setup: TrialSetup, session: Session) -> None:
    """Grow, train and report one trial (see the module docstring)."""
    started = time.perf_counter()
    torch.set_num_threads(max(1, int(setup.cpus)))  # oversubscribed cores: several times slower
    device = trial_device(setup)
    arch_id = child_arch_id(setup.search, session.trial_id)
    finished = _finished_result(plan, setup, arch_id)
    if finished is not None:
        # a resumed search restarts a trial that ended after Tune's last snapshot:
        # its result is on storage, so it is reported again instead of retrained
        session.report(finished, None)
        return
    data = _dataset(setup.dataset, setup.dataset_options, setup.data_seed)
    probe = probe_batch(data, setup.batch_size)  # data.split: never augmented
    data = data.with_augment(setup.augment)
    parent = artifacts.read_architecture(plan.parent_uri, plan.parent_sha256)
    folder = session.checkpoint_dir()
    if folder is not None:
        current, kept, state, optim_state = _restore(folder)
    else:
        child, records, grow_flops = grow_child(plan, probe, parent, setup.inherit_weights,
                                                setup.shrink_perturb)
        summary = {"structure_hash": child.structure_hash, "params": child.num_params,
                   "flops": child.flops}  # fmt: skip
        current, kept, optim_state = child, None, None
        state = _State(summary, records, grow_flops)
        # the graph goes out first, so a trial stopped early (ASHA) is still in lineage
        _write_graph(current, _uri(setup, arch_id))
    module = current.to_module(device=device)
    optimizer = make_optimizer(plan, setup, parent, current, module)
    if optim_state is not None:
        optimizer.load_state_dict(optim_state)
    if state.first_batch_loss is None:
        state.first_batch_loss = _probe_loss(module, probe, device)
    steps = setup.steps_for(plan)
    config = loop_config(setup.growth, steps=steps, lr=plan.lr, schedule=plan.lr_schedule,
                         batch_size=setup.batch_size, seed=plan.trial_seed, device=str(device),
                         precision=setup.precision)  # fmt: skip
    trainer = GrowingTrainer(current, data, config, module=module, optimizer=optimizer,
                             start_step=state.step)  # fmt: skip
    _Loop(plan, setup, session, data, probe, arch_id, state, trainer, kept,
          time.perf_counter() - started).run(steps)


class _Loop:
    """Evaluation periods of one trial: train, evaluate, keep the best, report, checkpoint."""

    def __init__(self, plan: TrialPlan, setup: TrialSetup, session: Session, data: Dataset,
                 probe: Batch, arch_id: str, state: _State, trainer: GrowingTrainer,
                 kept: Architecture | None, setup_s: float) -> None:  # fmt: skip
        self.plan, self.setup, self.session, self.data = plan, setup, session, data
        self.probe, self.arch_id, self.state, self.trainer = probe, arch_id, state, trainer
        self.kept, self.setup_s = kept, setup_s
        self.kept_id = state.events[-1]["arch_id"] if state.events else arch_id
        self.history: list[EpochReport] = []
        self.seen_events = 0
        self.flops_base = state.train_flops

    def run(self, steps: int) -> None:
        saved_at = reported_at = time.perf_counter()
        trainer, state, setup = self.trainer, self.state, self.setup
        while trainer.step < steps:
            tick = time.perf_counter()
            train_loss = trainer.advance(min(setup.eval_every, steps - trainer.step))
            self._record_growth()
            val_loss, val_acc = evaluate(trainer.module, self.data, "val", device=trainer.device,
                                         precision=setup.precision)  # fmt: skip
            state.step, state.epoch = trainer.step, state.epoch + 1
            state.train_flops = self.flops_base + trainer.flops
            report = EpochReport(
                state.epoch, state.step, train_loss, val_loss, val_acc,
                _probe_loss(trainer.module, self.probe, trainer.device),
                float(state.first_batch_loss or math.nan), state.train_flops,
                time.perf_counter() - tick, self.setup_s,
            )
            stalled = self._judge(report)
            last = trainer.step >= steps or stalled
            due = time.perf_counter() - saved_at >= setup.checkpoint_every_s
            self.history.append(report)
            if last:
                self._finish(report, stalled)
                return
            if due or time.perf_counter() - reported_at >= setup.report_every_s or (
                    state.epoch in setup.report_epochs):  # fmt: skip
                self._report(report, checkpoint=due)
                reported_at = time.perf_counter()
                saved_at = reported_at if due else saved_at

    def _judge(self, report: EpochReport) -> bool:
        """Keep the weights when ``monitor`` improved; True once patience ran out."""
        state, setup = self.state, self.setup
        value = report.value(setup.monitor)
        if value is None:
            return False
        better = state.best is None or (
            value > state.best if setup.monitor_mode == "max" else value < state.best)
        if better:
            state.best, state.best_epoch, state.stale = value, report.epoch, 0
            state.kept_report = asdict(report)
            self.kept = self.trainer.arch.with_weights_from(self.trainer.module)
            self.kept_id = self._current_id()
            return False
        state.stale += 1
        return setup.patience is not None and state.stale >= setup.patience

    def _record_growth(self) -> None:
        """Write the graphs of the growths of the last period and note their events."""
        for event in self.trainer.events[self.seen_events:]:
            pre = self.state.events[-1]["arch_id"] if self.state.events else self.arch_id
            post = f"{self.arch_id}/g{len(self.state.events) + 1}"
            uri = _uri(self.setup, post)
            _write_graph(event.child, uri)
            self.state.events.append(event_record(event, pre, post, uri))
        self.seen_events = len(self.trainer.events)

    def _current_id(self) -> str:
        return self.state.events[-1]["arch_id"] if self.state.events else self.arch_id

    def _base(self, latest: EpochReport, history: list[EpochReport], arch: Architecture,
              **extra: Any) -> TrialReport:  # fmt: skip
        child = self.state.child
        return TrialReport(
            latest=latest, arch_id=self.arch_id, parent_id=self.plan.parent_id,
            child_uri=_uri(self.setup, self.arch_id), structure_hash=child["structure_hash"],
            params=child["params"], flops=child["flops"], morphisms=tuple(self.state.morphisms),
            history=tuple(history), node_id=self.session.node_id(),
            final_params=arch.num_params, final_flops=arch.flops, **extra,
        )  # fmt: skip

    def _report(self, latest: EpochReport, *, checkpoint: bool) -> None:
        result = self._base(latest, self.history[:-1], self.trainer.arch).to_result()
        self.history.clear()
        if not checkpoint:
            self.session.report(result, None)
            return
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            current = self.trainer.arch.with_weights_from(self.trainer.module)
            artifacts.write_architecture(current, tmp, "current")
            if self.kept is not None:
                artifacts.write_architecture(self.kept, tmp, "kept")
            (folder / "state.json").write_text(json.dumps(asdict(self.state)))
            torch.save(self.trainer.optimizer.state_dict(), folder / "optimizer.pt")
            self.session.report(result, folder)

    def _finish(self, last: EpochReport, stalled: bool) -> None:
        """Save the kept weights (the last ones when nothing was ever measured) and report
        the kept evaluation as the trial's result, with every evaluation not yet reported."""
        trainer, state = self.trainer, self.state
        if self.kept is None or state.best_epoch is None:
            self.kept = trainer.arch.with_weights_from(trainer.module)
            self.kept_id, state.best_epoch = self._current_id(), last.epoch
            state.kept_report = asdict(last)
        ref = artifacts.write_architecture(self.kept, self.setup.artifacts_uri,
                                          self.kept_id.replace("/", "__"), versioned=True)
        if self.plan.inherit_optimizer and self.kept.structure_hash == trainer.arch.structure_hash:
            saved = {"state": trainer.optimizer.state_dict(), "lr": self.plan.lr}
            artifacts.save_optimizer(ref.uri, saved)
        kept = EpochReport(**(state.kept_report or asdict(last)))
        report = self._base(
            kept, self.history, self.kept, final_arch_id=self.kept_id, weights_uri=ref.uri,
            weights_sha256=ref.sha256, weights_hash=self.kept.weights_hash,
            growth_events=tuple(state.events), kept_epoch=state.best_epoch,
            last_epoch=last.epoch, stopped_early=stalled,
        )  # fmt: skip
        result = report.to_result()
        _save_finished(self.plan, self.setup, self.arch_id, result)
        self.session.report(result, None)


def _finished_uri(setup: TrialSetup, arch_id: str) -> str:
    return artifacts.join(setup.artifacts_uri, arch_id.replace("/", "__") + ".final.json")


def _trial_identity(plan: TrialPlan, setup: TrialSetup) -> str:
    """What makes a rerun the same trial: its plan and the search's shared settings.

    Settings at their default are left out, so a later version that adds a setting
    (with a default that keeps the old behaviour) still recognises a finished trial."""
    shared = {}
    for f in fields(setup):
        value = getattr(setup, f.name)
        default = (f.default if f.default is not MISSING else
                   f.default_factory() if f.default_factory is not MISSING else MISSING)
        if default is MISSING or value != default:
            shared[f.name] = repr(value)
    text = json.dumps([plan.to_config(), shared], sort_keys=True, default=str)
    return artifacts.sha256_of(text.encode())


def _save_finished(plan: TrialPlan, setup: TrialSetup, arch_id: str,
                   result: dict[str, Any]) -> None:  # fmt: skip
    """Write the trial's final result beside its weights, before it is reported."""
    record = {"identity": _trial_identity(plan, setup), "result": result}
    try:
        artifacts.write_bytes(_finished_uri(setup, arch_id), json.dumps(record).encode())
    except WeightsError as exc:  # only a resume would miss it: the result still goes out
        log.warning("trial %s: final result not kept for a resume (%s)", arch_id, exc)


def _finished_result(plan: TrialPlan, setup: TrialSetup, arch_id: str) -> dict[str, Any] | None:
    """The final result this very trial already wrote, if it finished before."""
    try:
        record = json.loads(artifacts.read_bytes(_finished_uri(setup, arch_id)))
    except ValueError:  # WeightsError (no such file, unreadable) or a damaged JSON
        return None
    if not isinstance(record, dict) or record.get("identity") != _trial_identity(plan, setup):
        return None
    result = record.get("result")
    return result if isinstance(result, dict) else None


def _probe_loss(module: torch.nn.Module, probe: Batch, device: torch.device) -> float:
    module.eval()
    dtype = next(module.parameters()).dtype
    x = probe[0].to(dtype).to(device)
    y = probe[1].to(dtype).to(device) if probe[1].is_floating_point() else probe[1].to(device)
    with torch.no_grad():
        return float(task_loss(module(x), y))


def _uri(setup: TrialSetup, arch_id: str) -> str:
    return artifacts.join(setup.artifacts_uri, arch_id.replace("/", "__") + ".safetensors")


def _write_graph(arch: Architecture, uri: str) -> None:
    graph = json.dumps(arch.to_json(), sort_keys=True).encode()
    artifacts.write_bytes(artifacts.graph_uri_for(uri), graph)


def _restore(folder: Path) -> tuple[Architecture, Architecture | None, _State, dict[str, Any]]:
    state = _State(**json.loads((folder / "state.json").read_text()))
    current = artifacts.read_architecture(str(folder / "current.safetensors"))
    kept_path = folder / "kept.safetensors"
    kept = artifacts.read_architecture(str(kept_path)) if kept_path.exists() else None
    optim = torch.load(folder / "optimizer.pt", weights_only=True)
    return current, kept, state, optim
