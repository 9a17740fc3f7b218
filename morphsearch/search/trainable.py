"""The Ray Tune function trainable: grow a child from its parent, train it, report.

One trial, on any Ray worker: load the parent (graph + safetensors weights) from the
shared artifact store, apply the chosen morphism with a data batch (the child inherits
the parent's function and weights), train for the trial's epochs, report metrics and a
checkpoint every epoch, and save the child to the artifact store at the end. Workers
never touch the lineage database; the driver's callback records what they report.

Inheritance is measured, not assumed: ``first_batch_loss`` is the child's loss on the
fixed probe batch before any update, ``final_loss`` the loss on the same batch after
training. A child's ``first_batch_loss`` equals its parent's ``final_loss``.
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ray import tune

from morphsearch import artifacts, morphisms
from morphsearch.arch import Architecture
from morphsearch.data import Dataset, load_dataset
from morphsearch.growth.trainer import cosine_lr
from morphsearch.losses import accuracy, task_loss
from morphsearch.morphisms._registry import PROBE_SIZE
from morphsearch.morphisms.optim import transfer_optimizer

__all__ = ["TrialSetup", "child_arch_id", "morphism_flops", "train_child", "train_epoch_flops"]

Batch = tuple[torch.Tensor, torch.Tensor]

# A report carries, under this key, the metrics of the epochs trained since the previous
# report (JSON list of {name: number}, oldest first): with short epochs a trial reports
# every ``report_every_s`` seconds instead of every epoch (each report is a round trip
# through the driver while the trial waits), and the lineage callback still records every
# epoch.
EPOCH_HISTORY = "epoch_history"


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of one search shares (passed with ``tune.with_parameters``)."""

    search: str
    artifacts_uri: str
    dataset: str
    dataset_options: tuple[tuple[str, Any], ...]
    data_seed: int
    epochs: int
    batch_size: int
    cpus: float
    growth: dict[str, Any]
    checkpoint_every_s: float = 10.0
    # report to Tune at most every this many seconds (0: every epoch); see EPOCH_HISTORY
    report_every_s: float = 0.0
    # epochs always reported (ASHA's rung milestones: the scheduler compares trials there)
    report_epochs: tuple[int, ...] = ()
    inherit_weights: bool = True
    # epochs of a child that inherits a trained parent (None: ``epochs``, as the seed)
    child_epochs: int | None = None
    # stop once ``monitor`` has not improved for this many epochs (None: never)
    patience: int | None = None
    monitor: str = "val_loss"
    monitor_mode: str = "min"

    def epochs_for(self, config: dict[str, Any]) -> int:
        """The trial's epoch budget: fine-tuning for an inheriting child, else full.

        A child fine-tunes when it has a morphism, inherits weights and its parent was
        trained (``fine_tune``, set by the space; a child of the seed suggested while
        the seed still trains starts from untrained weights and trains fully).
        """
        fine_tune = config.get("morphism") and config.get("fine_tune", True)
        if fine_tune and self.inherit_weights and self.child_epochs:
            return self.child_epochs
        return self.epochs


def child_arch_id(search: str, trial_id: str) -> str:
    return f"{search}/{trial_id}"


@functools.lru_cache(maxsize=2)
def _dataset(name: str, options: tuple[tuple[str, Any], ...], seed: int) -> Dataset:
    # cached per worker process: with reuse_actors, later trials skip the load
    return load_dataset(name, seed=seed, **dict(options))


def probe_batch(data: Dataset, batch_size: int) -> Batch:
    """The fixed batch every trial measures inheritance on (first training samples)."""
    return data.x_train[:batch_size], data.y_train[:batch_size]


def _evaluate(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Loss and accuracy (NaN for regression) in eval mode."""
    module.eval()
    with torch.no_grad():
        out = module(x)
        acc = accuracy(out, y)
        return float(task_loss(out, y)), math.nan if acc is None else acc


def morphism_flops(name: str, parent: Architecture, child: Architecture, batch: int) -> int:
    """FLOPs of applying a morphism on a probe batch of ``batch`` samples.

    Every ``apply`` runs parent and child forward on up to ``PROBE_SIZE`` samples (its
    function-preservation check); a gradient-based morphism (GradMax, splitting) also
    runs one forward+backward pass (3x forward) of the parent over the batch.
    """
    probe = min(batch, PROBE_SIZE)
    flops = (parent.flops + child.flops) * probe
    if morphisms.get(name).needs_batch:
        flops += 3 * parent.flops * batch
    return int(flops)


def _load_parent(config: dict[str, Any]) -> Architecture:
    return artifacts.load_architecture(config["parent_uri"], config.get("parent_sha256"))


def _grow_child(
    config: dict[str, Any], probe: Batch, inherit: bool = True,
    parent: Architecture | None = None,
) -> tuple[Architecture, list[dict[str, Any]], int]:
    """The trial's child, its morphism records and the FLOPs spent growing it (from
    ``parent``, loaded from ``config["parent_uri"]`` when not given)."""
    if parent is None:
        parent = _load_parent(config)
    seed = int(config.get("trial_seed", 0))
    if not config.get("morphism"):
        return parent, [], 0
    result = morphisms.apply(
        config["morphism"],
        parent,
        config["site"],
        batch=probe,
        seed=seed,
        **dict(config.get("params") or {}),
    )
    child = result.child
    spent = morphism_flops(config["morphism"], parent, child, len(probe[0]))
    if not inherit:
        # the same graph, trained from a fresh initialisation: the control for inheritance
        child = Architecture(child.editable_graph(), seed=seed, dtype=child.dtype)
    return child, [result.record.to_json()], spent


def _optimizer(
    config: dict[str, Any], setup: TrialSetup, child: Architecture, module: torch.nn.Module,
    parent: Architecture | None = None,
) -> torch.optim.Optimizer:
    """The trial's Adam at ``config["lr"]``: fresh, or continuing its parent's state.

    With ``config["inherit_optimizer"]`` (``selection.inherit_optimizer``), a child that
    inherits its parent's weights also inherits the optimizer state saved beside them
    (moments of added units start at zero: ``transfer_optimizer``); without a saved state
    (the untrained seed) it starts fresh.
    """
    lr = float(config["lr"])
    fresh = torch.optim.Adam(module.parameters(), lr=lr)
    if not (config.get("morphism") and config.get("inherit_optimizer") and setup.inherit_weights):
        return fresh
    saved = artifacts.load_optimizer(config["parent_uri"])
    if saved is None:
        return fresh
    if parent is None:
        parent = _load_parent(config)
    device = next(module.parameters()).device
    parent_module = parent.to_module(device=device)
    previous = torch.optim.Adam(parent_module.parameters(), lr=lr)
    previous.load_state_dict(saved["state"])
    carried = transfer_optimizer(previous, parent_module, module, parent, child)
    for group in carried.param_groups:
        group["lr"] = lr
    return carried


def _schedule_lr(
    optimizer: torch.optim.Optimizer, config: dict[str, Any], epoch: int, epochs: int
) -> None:
    """Set epoch ``epoch``'s learning rate (``budget.lr_schedule``; stateless, so a
    restored trial continues the same schedule): constant, or cosine from the trial's lr
    to 0 over its ``epochs``."""
    if config.get("lr_schedule", "constant") != "cosine":
        return
    lr = cosine_lr(float(config["lr"]), epoch - 1, epochs)
    for group in optimizer.param_groups:
        group["lr"] = lr


def _save_optimizer(
    weights_uri: str, optimizer: torch.optim.Optimizer, config: dict[str, Any]
) -> None:
    """Save the optimizer's final state beside the trial's weights, for its children
    (only in searches whose children continue it: ``inherit_optimizer``)."""
    if not config.get("inherit_optimizer"):
        return
    state = {"state": optimizer.state_dict(), "lr": float(config["lr"])}
    artifacts.save_optimizer(weights_uri, state)


def _restore(checkpoint: tune.Checkpoint) -> tuple[Architecture, dict[str, Any], dict[str, Any]]:
    with checkpoint.as_directory() as folder:
        state = json.loads((Path(folder) / "state.json").read_text())
        arch = artifacts.load_architecture(str(Path(folder) / "child.safetensors"))
        optim = torch.load(Path(folder) / "optimizer.pt", weights_only=True)
    return arch, state, optim


def _epoch(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
) -> float:
    module.train()
    order = torch.randperm(len(data.x_train), generator=generator)
    total, seen = 0.0, 0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        x, y = data.x_train[idx].to(device), data.y_train[idx].to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = task_loss(module(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)
        seen += len(idx)
    return total / max(seen, 1)


def train_epoch_flops(arch: Architecture, data: Dataset) -> int:
    """Training FLOPs of one epoch: forward + backward = 3x forward FLOPs per sample."""
    return 3 * int(arch.flops) * len(data.x_train)


def _node_id() -> str | None:
    import ray

    try:
        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # outside Ray (unit tests call the function directly)
        return None


def train_child(config: dict[str, Any], setup: TrialSetup) -> None:
    """The function trainable (use through ``tune.with_parameters(train_child, setup=...)``).

    Args:
        config: the trial's config from :class:`~morphsearch.search.space.MorphismSpace`:
            ``parent_id``, ``parent_uri``, ``parent_sha256``, ``morphism``, ``site``,
            ``params``, ``lr``, ``trial_seed``.
        setup: what all trials share.
    """
    started = time.perf_counter()
    # one torch thread per allocated CPU: oversubscribed cores make trials several times slower
    torch.set_num_threads(max(1, int(setup.cpus)))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = _dataset(setup.dataset, setup.dataset_options, setup.data_seed)
    probe = probe_batch(data, setup.batch_size)
    trial_id = tune.get_context().get_trial_id() or "local"
    arch_id = child_arch_id(setup.search, trial_id)
    checkpoint = tune.get_checkpoint()
    parent = None
    if checkpoint is not None:
        child, state, optim_state = _restore(checkpoint)
    else:
        parent = _load_parent(config)
        child, records, grow_flops = _grow_child(config, probe, setup.inherit_weights, parent)
        state = {
            "epoch": 0,
            "morphisms": records,
            "first_batch_loss": None,
            "train_flops": grow_flops,
        }
        optim_state = None
    name = arch_id.replace("/", "__")
    child_uri = artifacts.join(setup.artifacts_uri, f"{name}.safetensors")
    # the graph goes out first, so a trial stopped early (ASHA) is still in lineage
    graph = json.dumps(child.to_json(), sort_keys=True).encode()
    artifacts.write_bytes(artifacts.graph_uri_for(child_uri), graph)
    module = child.to_module(device=device)
    probe_dev = (probe[0].to(device), probe[1].to(device))
    if state["first_batch_loss"] is None:
        state["first_batch_loss"] = _evaluate(module, *probe_dev)[0]
    setup_s = time.perf_counter() - started
    if setup.growth.get("enabled"):  # the growing trainer keeps its own optimizer
        base = {
            "arch_id": arch_id,
            "child_uri": child_uri,
            "setup_time_s": setup_s,
            "first_batch_loss": state["first_batch_loss"],
            "morphisms": state["morphisms"],
            "train_flops": state["train_flops"],
        }
        _train_growing(child, data, setup, config, device, base, probe_dev)
        return
    if optim_state is not None:  # restored: the checkpoint's own state
        optimizer: torch.optim.Optimizer = torch.optim.Adam(module.parameters())
        optimizer.load_state_dict(optim_state)
    else:
        optimizer = _optimizer(config, setup, child, module, parent)
    val = (data.x_val.to(device), data.y_val.to(device))
    saved_at = reported_at = time.perf_counter()
    unreported: list[dict[str, float]] = []
    epochs = setup.epochs_for(config)
    for epoch in range(int(state["epoch"]) + 1, epochs + 1):
        tick = time.perf_counter()
        generator = torch.Generator().manual_seed(int(config.get("trial_seed", 0)) * 1009 + epoch)
        _schedule_lr(optimizer, config, epoch, epochs)
        train_loss = _epoch(module, optimizer, data, setup.batch_size, generator, device)
        val_loss, val_acc = _evaluate(module, *val)
        final_loss = _evaluate(module, *probe_dev)[0]
        state["epoch"] = epoch
        # forward + backward = 3x forward FLOPs per training sample (evaluation not counted)
        state["train_flops"] = int(state.get("train_flops", 0)) + train_epoch_flops(child, data)
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "final_loss": final_loss,
            "first_batch_loss": state["first_batch_loss"],
            "params": child.num_params,
            "flops": child.flops,
            "train_flops": state["train_flops"],
            "arch_id": arch_id,
            "parent_id": config.get("parent_id"),
            "node_id": _node_id(),
            "train_time_s": time.perf_counter() - tick,
            "setup_time_s": setup_s,
            "morphisms": json.dumps(state["morphisms"]),
            "child_uri": child_uri,
            "structure_hash": child.structure_hash,
        }
        stalled = _stalled(state, metrics, setup)
        last = epoch == epochs or stalled
        checkpoint = last or time.perf_counter() - saved_at >= setup.checkpoint_every_s
        # the weights leave the module only when they are saved (not every epoch: on a GPU
        # that is two full copies per epoch)
        trained = child.with_weights_from(module) if checkpoint else child
        if last:
            ref = artifacts.save_architecture(trained, setup.artifacts_uri, name, versioned=True)
            _save_optimizer(ref.uri, optimizer, config)
            metrics.update(
                weights_uri=ref.uri, weights_sha256=ref.sha256, weights_hash=trained.weights_hash
            )
            metrics["stopped_early"] = stalled and epoch < epochs
        due = checkpoint or epoch in setup.report_epochs
        if not (due or time.perf_counter() - reported_at >= setup.report_every_s):
            unreported.append(_numbers(metrics))
            continue
        metrics[EPOCH_HISTORY] = json.dumps(unreported)
        unreported = []
        if checkpoint:
            # checkpoints cost a save and a copy to storage: not after every short epoch
            _report(metrics, trained, state, optimizer)
            saved_at = time.perf_counter()
        else:
            tune.report(metrics)
        reported_at = time.perf_counter()
        if last:
            return


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of one epoch (what an epoch-history entry keeps)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)
    }


def _stalled(state: dict[str, Any], metrics: dict[str, Any], setup: TrialSetup) -> bool:
    """Early stopping: True once ``setup.monitor`` went ``patience`` epochs without a gain.

    The best value and the count of stale epochs live in ``state`` (the checkpoint), so
    a restored trial keeps counting where it left off.
    """
    if setup.patience is None:
        return False
    value = metrics.get(setup.monitor)
    if not isinstance(value, (int, float)) or math.isnan(float(value)):
        return False
    best = state.get("best_monitor")
    better = best is None or (value > best if setup.monitor_mode == "max" else value < best)
    if better:
        state["best_monitor"], state["stale"] = float(value), 0
    else:
        state["stale"] = int(state.get("stale", 0)) + 1
    return int(state.get("stale", 0)) >= setup.patience


def _train_growing(
    child: Architecture,
    data: Dataset,
    setup: TrialSetup,
    config: dict[str, Any],
    device: torch.device,
    base: dict[str, Any],
    probe: Batch,
) -> None:
    """Train with in-training growth and report once, at the last epoch."""
    from morphsearch.search.growing import grow_during_trial

    tick = time.perf_counter()
    outcome = grow_during_trial(
        child,
        data,
        setup.growth,
        epochs=setup.epochs_for(config),
        batch_size=setup.batch_size,
        lr=float(config["lr"]),
        seed=int(config.get("trial_seed", 0)),
        lr_schedule=config.get("lr_schedule", "constant"),  # GrowthConfig checks it
        device=device,
        base=setup.artifacts_uri,
        arch_id=base["arch_id"],
    )
    final = outcome.arch
    module = final.to_module(device=device)
    val_loss, val_acc = _evaluate(module, data.x_val.to(device), data.y_val.to(device))
    final_id = outcome.events[-1]["arch_id"] if outcome.events else base["arch_id"]
    ref = artifacts.save_architecture(
        final, setup.artifacts_uri, final_id.replace("/", "__"), versioned=True
    )
    metrics = {
        "epoch": setup.epochs_for(config),
        "train_loss": outcome.train_loss,
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "final_loss": _evaluate(module, *probe)[0],
        "first_batch_loss": base["first_batch_loss"],
        "params": final.num_params,
        "flops": final.flops,
        "train_flops": int(base["train_flops"]) + outcome.train_flops,
        "arch_id": base["arch_id"],
        "parent_id": config.get("parent_id"),
        "node_id": _node_id(),
        "train_time_s": time.perf_counter() - tick,
        "setup_time_s": base["setup_time_s"],
        "morphisms": json.dumps(base["morphisms"]),
        "child_uri": base["child_uri"],
        "structure_hash": child.structure_hash,
        # the trial's child (before growth) is recorded with its own size
        "child_params": child.num_params,
        "child_flops": child.flops,
        "growth_events": json.dumps(outcome.events),
        "final_arch_id": final_id,
        "weights_uri": ref.uri,
        "weights_sha256": ref.sha256,
        "weights_hash": final.weights_hash,
    }
    tune.report(metrics)


def _report(
    metrics: dict[str, Any],
    arch: Architecture,
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer,
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        artifacts.save_architecture(arch, folder, "child")
        (Path(folder) / "state.json").write_text(json.dumps(state))
        torch.save(optimizer.state_dict(), Path(folder) / "optimizer.pt")
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
