"""Run a search: Ray Tune ``Tuner`` with ``OptunaSearch``, optional ASHA, lineage callback.

Local Ray by default; an existing cluster with ``address``. ``resume=True`` restores the
Tuner (trials, searcher and callback state) from ``<storage>/<name>`` after the driver
was killed; lineage writes are idempotent by trial id, so nothing is recorded twice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import torch
from ray.tune import Stopper

from morphsearch import artifacts
from morphsearch.errors import NotFound, SearchError, first_line
from morphsearch.lineage import ArchitectureIn, LineageStore
from morphsearch.search.callback import LineageCallback
from morphsearch.search.config import SearchConfig
from morphsearch.search.holdout import score_on_test
from morphsearch.search.inputs import SearchInputs, absolute
from morphsearch.search.preflight import check_config
from morphsearch.search.progress import SearchProgress
from morphsearch.search.protocol import EPOCH, EPOCH_HISTORY, EPOCH_METRICS
from morphsearch.search.quiet import quiet_libraries
from morphsearch.search.searcher import make_searcher
from morphsearch.search.space import MorphismSpace, ParentInfo, seed_arch_id
from morphsearch.search.trainable import train_child
from morphsearch.search.trial import TrialSetup, probe_batch

__all__ = ["SearchResult", "TrainFlopsStopper", "asha_milestones", "run_search", "spent_flops"]

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


def _prepare(
    config: SearchConfig, name: str, storage: str, inputs: SearchInputs
) -> tuple[TrialSetup, MorphismSpace]:
    data, options, seed = inputs.data, inputs.options, inputs.seed
    art = artifacts.join(storage, name, "architectures")
    with LineageStore(config.database, write=True) as store:
        store.create_search(name, config.model_dump(mode="json"))
        ref = _recorded_seed(store, seed_arch_id(name))
        if ref is None:
            ref = artifacts.write_architecture(seed, art, "seed")
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
        shrink_perturb=config.selection.shrink_perturb,
        augment=config.dataset.augmentation(),
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

    from morphsearch.search.asha import RecentASHAScheduler  # deferred: imports ray.tune

    setup, space = _prepare(config, name, storage, inputs)
    trainable = tune.with_resources(
        tune.with_parameters(train_child, setup=setup),
        {"cpu": config.resources.cpus, "gpu": config.resources.gpus},
    )
    scheduler = None
    if config.scheduler.asha:
        asha: dict[str, Any] = dict(
            metric=config.metric,
            mode=config.mode,
            time_attr=EPOCH,
            max_t=-(-setup.steps // setup.eval_every),  # a full trial's evaluations
            grace_period=config.scheduler.grace_period,
            reduction_factor=config.scheduler.reduction_factor,
        )
        window = config.scheduler.window
        scheduler = RecentASHAScheduler(window, **asha) if window else ASHAScheduler(**asha)
    tune_config = tune.TuneConfig(
        search_alg=make_searcher(config, name, space),
        scheduler=scheduler,
        num_samples=config.budget.trials,
        max_concurrent_trials=config.budget.max_concurrent,
        time_budget_s=config.budget.time_s,
        reuse_actors=config.reuse_actors,
    )
    # verbose=0 silences Tune's own table; this is the user's view of the search
    progress = SearchProgress(
        config.metric, config.mode, total=config.budget.trials, time_budget_s=config.budget.time_s
    )
    run_config = tune.RunConfig(
        name=name,
        storage_path=storage,
        callbacks=[
            LineageCallback(config.database, name, progress=progress),
            progress,
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
    # everything that can fail on the user's input fails here, before Ray and before
    # any write: a bad start costs seconds and leaves nothing behind (``submit`` runs
    # the same checks before it contacts the cluster)
    inputs = check_config(config, resume=resume)
    name = config.name or "search"
    storage = absolute(config.storage)
    _start_ray(address, quiet_libraries(verbose), verbose)
    tuner = (
        _restore(config, name, storage, inputs)
        if resume
        else _tuner(config, name, storage, inputs)
    )
    grid = tuner.fit()
    with LineageStore(config.database, write=True) as store:
        # a resumed search's grid lacks the trials Tune's snapshot missed; lineage has them
        in_grid = {str((r.metrics or {}).get("trial_id")) for r in grid}
        lost = ({t: s for t, s in store.trial_statuses(name).items() if t not in in_grid}
                if resume else {})  # fmt: skip
        errors = sum(1 for r in grid if r.error is not None)
        errors += sum(1 for status in lost.values() if status == "ERROR")
        score_on_test(store, config, name)
        store.set_search_status(name, "finished" if errors == 0 else "finished_with_errors")
        return _summary(store, config, name, len(grid) + len(lost), artifacts.join(storage, name))


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
        first = first_line(exc)
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
