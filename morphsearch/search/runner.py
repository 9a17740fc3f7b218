"""Run a search: Ray Tune ``Tuner`` with ``OptunaSearch``, optional ASHA, lineage callback.

Local Ray by default; an existing cluster with ``address``. ``resume=True`` restores the
Tuner (trials, searcher and callback state) from ``<storage>/<name>`` after the driver
was killed; lineage writes are idempotent by trial id, so nothing is recorded twice.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ray.tune import Stopper

from morphsearch import artifacts, builders, morphisms
from morphsearch.arch import Architecture
from morphsearch.arch.fx_import import from_module, module_from_factory
from morphsearch.data import Dataset, load_dataset
from morphsearch.errors import (
    ConfigError,
    ModuleImportError,
    MorphSearchError,
    NotFound,
    SearchError,
)
from morphsearch.growth.triggers import TRIGGERS
from morphsearch.lineage import ArchitectureIn, LineageStore
from morphsearch.search.callback import LineageCallback
from morphsearch.search.config import SearchConfig
from morphsearch.search.growing import SCORERS
from morphsearch.search.holdout import score_on_test
from morphsearch.search.preflight import preflight
from morphsearch.search.progress import SearchProgress
from morphsearch.search.protocol import EPOCH, EPOCH_HISTORY, EPOCH_METRICS
from morphsearch.search.quiet import quiet_libraries
from morphsearch.search.searcher import make_searcher
from morphsearch.search.space import MorphismSpace, ParentInfo, seed_arch_id
from morphsearch.search.trainable import train_child
from morphsearch.search.trial import TrialSetup, probe_batch

__all__ = [
    "SearchResult", "TrainFlopsStopper", "asha_milestones", "build_seed", "run_search",
    "spent_flops",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchResult:
    """What a finished search reports."""

    name: str
    best_arch_id: str | None
    metric: str
    best_value: float | None
    seed_value: float | None
    trials: int
    experiment_path: str


def build_seed(config: SearchConfig, data: Dataset) -> Architecture:
    """The seed architecture: a graph file, a builder fitted to the dataset's shapes, or
    the user's module imported on a batch of two inputs of the dataset's shape.

    Raises:
        ConfigError: the graph does not fit the dataset, or the module cannot be imported.
    """
    spec = config.seed_graph
    if spec.path is not None:
        arch = Architecture.from_json(_graph_path(spec.path, config.source))
    elif spec.module is not None:
        arch = _imported_seed(spec.module, spec.args, data)
    elif spec.builder == "mlp":
        width = math.prod(data.input_shape)
        arch = builders.mlp([width, *spec.hidden, data.num_outputs], seed=config.seed,
                            input_shape=data.input_shape, **spec.args)
    elif spec.builder == "cnn":
        arch = builders.cnn(
            data.input_shape, num_classes=data.num_outputs, seed=config.seed, **spec.args
        )
    else:
        arch = builders.resnet(
            data.input_shape, num_classes=data.num_outputs, seed=config.seed, **spec.args
        )
    if tuple(arch.input_shape) != tuple(data.input_shape):
        raise ConfigError(
            f"seed_graph: input shape {tuple(arch.input_shape)} does not fit dataset "
            f"{data.name} {tuple(data.input_shape)}; use a graph with input shape "
            f"{list(data.input_shape)} (an MLP starts with a flatten node)"
        )
    return arch


def _imported_seed(factory: str, args: dict[str, Any], data: Dataset) -> Architecture:
    example = torch.randn((2, *data.input_shape), generator=torch.Generator().manual_seed(0))
    try:
        return from_module(module_from_factory(factory, **args), example)
    except ModuleImportError as exc:
        raise ConfigError(f"seed_graph.module: {exc}") from None


def _graph_path(path: str, source: str | None) -> str:
    """A seed graph path as given, else relative to the config file or its parent folder."""
    candidates = [Path(path)]
    if source is not None:
        candidates += [Path(source).parent / path, Path(source).parent.parent / path]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    return path  # let the graph loader raise its own one-line error


def _check_morphisms(config: SearchConfig) -> None:
    """Every morphism, trigger and scorer the config names is registered."""
    valid = morphisms.list_morphisms()
    named = [(f"morphisms.{name}", name) for name in config.morphisms]
    if config.growth.enabled:
        named.append(("growth.morphism", config.growth.morphism))
    for field, name in named:
        if name not in valid:
            raise ConfigError(
                f"{config.source or 'config'}: field '{field}': unknown morphism {name!r}; "
                f"valid morphisms: {', '.join(valid) or 'none registered'}"
            )
    for field, registry, name in (("growth.trigger", TRIGGERS, config.growth.trigger),
                                  ("growth.scorer", SCORERS, config.growth.scorer)):
        if name not in registry:
            raise ConfigError(
                f"{config.source or 'config'}: field '{field}': {registry.unknown(name)}"
            )


def _absolute(uri: str) -> str:
    return uri if "://" in uri else str(Path(uri).resolve())


@dataclass(frozen=True)
class SearchInputs:
    """The dataset and seed a search starts from, loaded (and so checked) before Ray."""

    data: Dataset
    options: dict[str, Any]
    seed: Architecture


def load_inputs(config: SearchConfig) -> SearchInputs:
    """Load the dataset and build the seed; errors name the config field to fix.

    Raises:
        ConfigError: the data or the seed graph cannot be loaded, or do not fit.
    """
    options = config.dataset.loader_options()
    field = "dataset.path" if config.dataset.path else "dataset"
    try:
        data = load_dataset(config.dataset.name, seed=config.seed, **options)
    except MorphSearchError as exc:
        raise _field_error(config, field, exc) from None
    try:
        seed = build_seed(config, data)
    except ConfigError:
        raise  # build_seed's own errors name seed_graph already
    except MorphSearchError as exc:
        raise _field_error(config, "seed_graph.path", exc) from None
    return SearchInputs(data, options, seed)


def _field_error(config: SearchConfig, field: str, exc: MorphSearchError) -> ConfigError:
    return ConfigError(f"{config.source or 'config'}: field '{field}': {exc}")


def _prepare(
    config: SearchConfig, name: str, storage: str, inputs: SearchInputs
) -> tuple[TrialSetup, MorphismSpace]:
    data, options, seed = inputs.data, inputs.options, inputs.seed
    art = artifacts.join(storage, name, "architectures")
    with LineageStore(config.database, write=True) as store:
        store.create_search(name, config.model_dump(mode="json"))
        ref = _recorded_seed(store, seed_arch_id(name))
        if ref is None:
            ref = artifacts.save_architecture(seed, art, "seed")
            store.record_seed(
                name,
                ArchitectureIn(
                    seed_arch_id(name),
                    seed.to_json(),
                    seed.structure_hash,
                    seed.num_params,
                    seed.flops,
                    seed.weights_hash,
                    ref.uri,
                    ref.sha256,
                ),
            )
    # the kept weights and early stopping follow the first objective when it is measured
    # every evaluation (else val_loss)
    monitor, monitor_mode = (
        (config.metric, config.mode) if config.metric in EPOCH_METRICS else ("val_loss", "min")
    )
    train_size = len(data.train)  # type: ignore[arg-type]  # rows, none loaded
    steps, child_steps, every = config.budget.in_steps(train_size)
    setup = TrialSetup(
        search=name,
        artifacts_uri=art,
        dataset=config.dataset.name,
        dataset_options=tuple(sorted(options.items())),
        data_seed=config.seed,
        batch_size=config.budget.batch_size,
        steps=steps,
        eval_every=every,
        child_steps=child_steps,
        cpus=config.resources.cpus,
        gpus=config.resources.gpus,
        precision=config.budget.precision,
        growth=config.growth,
        checkpoint_every_s=config.budget.checkpoint_every_s,
        report_every_s=config.budget.report_every_s,
        report_epochs=asha_milestones(config, config.budget.evaluations(train_size)),
        inherit_weights=config.selection.inherit_weights,
        patience=config.budget.patience,
        monitor=monitor,
        monitor_mode=monitor_mode,
    )
    info = ParentInfo(seed_arch_id(name), ref.uri, ref.sha256, seed.to_json())
    probe = probe_batch(data, min(32, config.budget.batch_size))
    return setup, MorphismSpace(config, name, config.database, probe, info)


def _recorded_seed(store: LineageStore, arch_id: str) -> artifacts.ArtifactRef | None:
    """The seed a resumed search already recorded: its files must not be rewritten."""
    try:
        record = store.architecture(arch_id)
    except NotFound:
        return None
    return artifacts.ArtifactRef(record.weights_uri or "", record.weights_sha256 or "")


def asha_milestones(config: SearchConfig, max_t: int) -> tuple[int, ...]:
    """The evaluations at which ASHA compares trials: its rungs ``grace_period * rf**k``
    up to ``max_t`` (a full trial's evaluations, ``budget.evaluations``); trials always
    report these, however ``report_every_s`` batches the others. Empty without ASHA."""
    if not config.scheduler.asha:
        return ()
    epoch, out = config.scheduler.grace_period, []
    while epoch <= max_t:
        out.append(epoch)
        epoch *= config.scheduler.reduction_factor
    return tuple(out)


class TrainFlopsStopper(Stopper):
    """Stops the whole experiment once its trials have spent ``limit`` training FLOPs.

    Each trial reports ``train_flops`` cumulatively; the stopper keeps the largest value
    per trial and stops every trial when their sum reaches the limit, so the budget is
    compute, not trial count (trials differ in size by orders of magnitude). The largest,
    not the latest: a trial's last result carries its kept evaluation's metrics (an
    earlier one when it stopped on patience), and the evaluations after it come in that
    result's ``epoch_history``.
    """

    def __init__(self, limit: float) -> None:
        self.limit = float(limit)
        self.spent: dict[str, float] = {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self.spent[trial_id] = max(self.spent.get(trial_id, 0.0), spent_flops(result))
        return self.stop_all()

    def stop_all(self) -> bool:
        return sum(self.spent.values()) >= self.limit


def spent_flops(result: dict[str, Any]) -> float:
    """The training FLOPs a trial had spent by this result: the largest ``train_flops``
    of the result and of the evaluations in its ``epoch_history``."""
    values = [float(result.get("train_flops") or 0.0)]
    history = result.get(EPOCH_HISTORY)
    if history:
        values += [float(r.get("train_flops") or 0.0) for r in json.loads(history)]
    return max(values)


def _tuner(config: SearchConfig, name: str, storage: str, inputs: SearchInputs) -> Any:
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler

    setup, space = _prepare(config, name, storage, inputs)
    trainable = tune.with_resources(
        tune.with_parameters(train_child, setup=setup),
        {"cpu": config.resources.cpus, "gpu": config.resources.gpus},
    )
    scheduler = None
    if config.scheduler.asha:
        scheduler = ASHAScheduler(
            metric=config.metric,
            mode=config.mode,
            time_attr=EPOCH,
            max_t=-(-setup.steps // setup.eval_every),  # a full trial's evaluations
            grace_period=config.scheduler.grace_period,
            reduction_factor=config.scheduler.reduction_factor,
        )
    tune_config = tune.TuneConfig(
        search_alg=make_searcher(config, name, space),
        scheduler=scheduler,
        num_samples=config.budget.trials,
        max_concurrent_trials=config.budget.max_concurrent,
        time_budget_s=config.budget.time_s,
        reuse_actors=config.reuse_actors,
    )
    run_config = tune.RunConfig(
        name=name,
        storage_path=storage,
        callbacks=[
            LineageCallback(config.database, name),
            # verbose=0 silences Tune's own table; this is the user's view of the search
            SearchProgress(
                config.metric,
                config.mode,
                total=config.budget.trials,
                time_budget_s=config.budget.time_s,
            ),
            # Tune's per-trial result.json / progress.csv, which its analysis tools read;
            # added by hand because the quiet default turns off its automatic loggers
            # (the TensorBoard one prints a hint on every run)
            JsonLoggerCallback(),
            CSVLoggerCallback(),
        ],
        failure_config=tune.FailureConfig(max_failures=config.retries),
        stop=_stopper(config),
        # num_to_keep=1 makes Tune snapshot the experiment after every trial checkpoint
        # (trials checkpoint at their end and at most every budget.checkpoint_every_s):
        # a driver killed right after a trial finished then resumes knowing that trial,
        # instead of from a snapshot up to 10 s old that would run a replacement for it
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        verbose=0,
    )
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


def _stopper(config: SearchConfig) -> TrainFlopsStopper | None:
    limit = config.budget.max_train_flops
    return None if limit is None else TrainFlopsStopper(limit)


def _restore(config: SearchConfig, name: str, storage: str, inputs: SearchInputs) -> Any:
    from ray import tune

    path = artifacts.join(storage, name)
    if not tune.Tuner.can_restore(path):
        raise SearchError(
            f"nothing to resume at {path}: no Tune experiment there; run without --resume"
        )
    setup, _ = _prepare(config, name, storage, inputs)
    trainable = tune.with_resources(
        tune.with_parameters(train_child, setup=setup),
        {"cpu": config.resources.cpus, "gpu": config.resources.gpus},
    )
    return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)


def run_search(
    config: SearchConfig,
    *,
    address: str | None = None,
    resume: bool = False,
    verbose: bool = False,
) -> SearchResult:
    """Run (or resume) the search ``config`` describes and summarise it from lineage.

    Args:
        config: the validated config (``name``, ``database``, ``storage`` included).
        address: a Ray cluster address (``auto``, ``ray://host:10001``); ``None`` starts
            a local Ray.
        resume: restore the Tuner from ``<storage>/<name>`` instead of starting anew.
        verbose: show Ray's, Tune's and Optuna's own output (default: morphsearch's only).

    Raises:
        ConfigError: unknown morphism, or a seed graph that does not fit the dataset.
        SearchError: nothing to resume, or Ray failed.
    """
    _check_morphisms(config)
    name = config.name or "search"
    storage = _absolute(config.storage)
    # everything that can fail on the user's input fails here, before Ray and before
    # any write: a bad start costs seconds and leaves nothing behind
    preflight(config.database, storage, name, resume=resume)
    inputs = load_inputs(config)
    _start_ray(address, quiet_libraries(verbose), verbose)
    tuner = (
        _restore(config, name, storage, inputs)
        if resume
        else _tuner(config, name, storage, inputs)
    )
    grid = tuner.fit()
    with LineageStore(config.database, write=True) as store:
        errors = sum(1 for r in grid if r.error is not None)
        score_on_test(store, config, name)
        store.set_search_status(name, "finished" if errors == 0 else "finished_with_errors")
        return _summary(store, config, name, len(grid), artifacts.join(storage, name))


def _start_ray(address: str | None, logging_level: int, verbose: bool) -> None:
    import ray

    if ray.is_initialized():
        return
    # the driver's own torch must not fight the trials for the cores
    torch.set_num_threads(1)
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=verbose,
            logging_level=logging_level,
            configure_logging=False,
            ignore_reinit_error=True,
        )
    except Exception as exc:
        # Ray raises bare Exceptions for start-up timeouts; the user needs one line.
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SearchError(
            f"could not start or reach {where}: {first}; check `ray status`"
            + (" and the address" if address else ", free memory and CPU load")
        ) from None


def _summary(
    store: LineageStore, config: SearchConfig, name: str, trials: int, path: str
) -> SearchResult:
    best = store.best(name, config.metric, config.mode, k=1)
    seed_value = None
    # the trial that trained the seed as it is: a child of the seed without a morphism
    plain = [n.arch_id for n in store.descendants(seed_arch_id(name), max_depth=1)[1:]
             if not n.morphisms]
    if plain:
        values = {b.arch_id: b.value
                  for b in store.best(name, config.metric, config.mode, k=10_000)}
        seed_value = values.get(plain[-1])
    return SearchResult(
        name,
        best[0].arch_id if best else None,
        config.metric,
        best[0].value if best else None,
        seed_value,
        trials,
        path,
    )
