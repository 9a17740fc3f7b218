"""Search efficiency on CNNs: growing with morphisms vs architecture search from scratch
(issues 8 and 15).

Five methods, one Ray Tune harness; per dataset and seed the same data, trial recipe
and budget:

- ``morphsearch``: ``run_search`` of a shipped conv config (``configs/mnist1d.yaml``:
  two conv1d of 8 channels at the signal's full resolution, one 2x pool, 1,858
  parameters; ``configs/digits.yaml``: conv(4)-batchnorm-pool-linear) and its morphisms;
  children inherit their parent's weights and fine-tune for ``child_steps``. Until
  2026-12-07 the MNIST-1D seed was the paper CNN at 8 channels, whose three strided
  convolutions halve the resolution three times (no morphism undoes it), while the
  from-scratch searches' best networks keep 20-40 positions; on development seeds 5-14,
  validation only, the full-resolution seed reached ASHA's best within half its FLOPs in
  8 and 7 of 10 (the strided seed 7 and 7), its picks scoring 0.985 / 0.983 validation
  (0.983 / 0.980) at about half the parameters
  (``--grow seed_graph.path=graphs/mnist1d-cnn-tiny.json`` runs the strided seed; on
  digits a seed without its pool gave 10 of 15, as its pooled seed, and was not taken).
  Overrides (the MNIST-1D figures quoted for them were measured from the strided seed,
  before session 14): the recipe and budget below, one objective, validation accuracy
  on MNIST-1D and validation loss on digits (its 269 validation images tie on accuracy:
  with the loss the picks' validation loss over 5 seeds was 0.022 against 0.035, their
  validation accuracy equal at 0.993, chosen before the test figures were read),
  ``selection.test_top: 0`` (scored here), ``selection.pool: best`` (MNIST-1D's config
  spreads its parents over the accuracy-vs-size front for its small-network target; with
  accuracy the only objective the best parents are the better use of the budget:
  MNIST-1D seed 0, best validation 0.970 against 0.929 with ``front``, chosen on
  validation before the 5-seed run), ``selection.shrink_perturb: [0.5, 0.1]`` as both
  configs set it (each inheriting child starts from ``0.5 w + 0.1 w0``, Ash & Adams'
  warm-start remedy: the picks' mean validation accuracy over 5 seeds rose from 0.940 to
  0.979 on MNIST-1D and from 0.985 to 0.990 on digits, chosen on validation before the
  full run; ``--grow selection.shrink_perturb=null`` turns it off), ``scheduler.asha: true`` with the reference's settings (grace 2
  evaluations, reduction factor 3, each rung ranked by the search's own objective: a
  child in the bottom two thirds of its rung stops there and cannot become a parent;
  chosen on the validation figures of seeds 5-9, not the reported seeds 0-4: MNIST-1D
  picks' mean validation accuracy 0.983 against 0.977, median FLOPs to ASHA's best
  validation 0.31x against 0.40x, digits tied at 0.991 / 0.992; ``--grow
  scheduler.asha=false`` turns it off), and
  ``selection.seed_first: false``: with the seed trained alone first, Tune
  keeps one actor (a second one, slower to start than a short child trial, is dropped
  when the first frees up) and the search runs one trial at a time (digits, seed 0, half
  budget: 91 s vs 52 s); ``--grow selection.seed_first=true`` restores it;
- ``morphsearch, no inheritance``: the same with ``selection.inherit_weights: false``
  (every child re-initialised, trained the full ``steps``): the control;
- ``scratch TPE``: Optuna TPE (seeded, 4 start-up trials, as morphsearch's searcher) over
  the CNN space of ``bench/_efficiency_space.py`` (1-3 convolutions of 4-64 channels,
  kernels 3/5/7 (1-d) or 3/5 (2-d), pooling none / after the last / after each
  convolution, lr in the config's ``selection.lr``), every trial from fresh weights;
- ``scratch TPE + ASHA``: the same under Ray Tune's ``ASHAScheduler`` on the evaluation
  index (``grace_period`` 2 evaluations, ``reduction_factor`` 3, ``max_t`` a full
  trial's evaluations): the reference every method is measured against;
- ``scratch random``: the same space with Optuna's ``RandomSampler`` (seeded).

Recipe (every trial, through ``train_child`` / ``TrialPlan``): Adam at the trial's lr,
cosine-decayed over its planned steps, the config's batch size (MNIST-1D 100, digits 64),
``steps`` from fresh weights and ``child_steps`` for inheriting children (MNIST-1D 1200 /
600, digits 800 / 400), an evaluation every ``eval_every`` steps (120 / 100), stopped
after 3 evaluations without a validation-accuracy gain, the best evaluation's weights
kept; two concurrent trials of one CPU. Budget per run: ``max_train_flops`` (MNIST-1D
1e12, digits 3e11; 3x ``arch.flops`` per training sample plus morphisms' probe passes,
evaluation not counted, ``TrainFlopsStopper``) and a wall-time safety cap (240 / 150 s,
flagged when hit); one trial cap for every method (MNIST-1D 160, digits 64), set above what
the FLOP budget allows so that the budget ends every run (ASHA's stopped trials count). An
earlier cap of 32 for morphsearch ended its MNIST-1D runs after 110-261 of their 1,000
GFLOPs: its small networks are cheap in FLOPs. Trials cut by the budget or stopped by
ASHA keep no weights and cannot be picked; their FLOPs count.

Data: MNIST-1D is the ``mnist1d`` package's default generation (4,000 train, 1,000 test)
with ``val_size: 1000`` extra samples for validation (generated beside it, seeded by the
seed); digits is ``load_dataset("digits", seed=seed)`` as 1x8x8 images, a stratified
1,169 / 269 / 359 split drawn per seed. The test split never feeds a choice.

Measurement. After each finished trial the pick is the trial with the best validation
accuracy so far (ties, frequent on 269 digits samples, go to the lower validation loss);
its test accuracy (measured here from its saved weights) against the run's cumulative
training FLOPs and wall time is the method's curve. Trials count in the order the
driver saw them end, on its float clock (``TrialEnds``; lineage's ``ended`` for
morphsearch): Tune's own ``timestamp`` is whole seconds, and digits trials of about a
second tied in it. A seed's target is the final value of the reference's curve; a
method's ratio is its FLOPs to first reach the target over the reference's own
("never": not reached). Medians over seeds come with bootstrap 95 %
intervals (10,000 resamples, fixed rng). The digits pick is not cross-validated:
re-scoring the top networks on a re-split of train+val would score them on samples they
trained on; instead each seed draws its own split (5 seeds: 5 repeated random splits),
and ``--repeat`` runs the first seed twice and reports the spread. Optuna samplers and
weight seeds follow the seed, but two concurrent trials finish in an order Ray does not
fix, so repeats differ. "CPU s" sums this process's and its Ray processes' CPU time
(from /proc): a load-independent measure of a run's cost.

Commands (from the repository root; tables to stdout, results.json and logs under --out):

    # full: 2 datasets x 5 seeds x 5 methods, plot to bench/search_efficiency.png;
    # measured 1,626 s (27 min) and 3,152 CPU s alone on the 2-core machine (2026-12-07)
    PYTHONPATH=. python bench/search_efficiency.py --out /tmp/search-efficiency
    # the spread between two runs of seed 0 (about a fifth of the full run, twice)
    PYTHONPATH=. python bench/search_efficiency.py --seeds 0 --repeat \
        --out /tmp/search-efficiency-repeat --plot /tmp/search-efficiency-repeat/plot.png
    # smoke run: digits, seed 0, a quarter of the budget (about 2 minutes)
    PYTHONPATH=. python bench/search_efficiency.py --quick
    # choosing a setting: development seeds, read on validation only (the same ratio,
    # with the reference's best validation accuracy as the target)
    PYTHONPATH=. python bench/search_efficiency.py --seeds 5 6 7 8 9 --on val \
        --methods morphsearch "scratch TPE + ASHA" --grow selection.pool=front --out /tmp/dev
    # tables of several runs, a later file's rows replacing an earlier one's
    PYTHONPATH=. python bench/search_efficiency.py --report A/results.json B/results.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from ray.tune import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _efficiency_report import (
    METHODS,
    REFERENCE,
    CpuMeter,
    On,
    Run,
    TrialRow,
    merge,
    plot,
    seed_table,
    spread,
    table,
)
from _efficiency_space import ScratchSpace, describe, layers_of, scratch_trial

from morphsearch import artifacts
from morphsearch.data import Dataset, load_dataset
from morphsearch.lineage import LineageStore
from morphsearch.losses import accuracy
from morphsearch.search.config import SearchConfig, load_config
from morphsearch.search.protocol import EPOCH
from morphsearch.search.runner import TrainFlopsStopper, run_search, spent_flops
from morphsearch.search.trainable import TrialSetup

ROOT = Path(__file__).resolve().parent.parent
ASHA_GRACE, ASHA_RF = 2, 3  # evaluations before the first rung; keep the top 1/3 per rung


@dataclass(frozen=True)
class Task:
    """One dataset's shared settings: every method gets exactly these."""

    dataset: str
    config: str  # the shipped morphsearch config, relative to the repository
    steps: int  # a network trained from fresh weights (the seed, every scratch trial)
    child_steps: int  # morphsearch's inheriting children
    eval_every: int
    patience: int
    max_train_flops: float
    trials: int  # every method's trial cap: a safety net, the FLOP budget should bind
    time_s: float  # a safety cap per run (the FLOP budget should end it first)
    grow_objective: tuple[str, str] = ("val_accuracy", "max")  # morphsearch's (module doc)

    def base(self) -> SearchConfig:
        return load_config(ROOT / self.config)


TASKS = {
    "mnist1d": Task("mnist1d", "configs/mnist1d.yaml", 1200, 600, 120, 3, 1.0e12, 160, 240),
    "digits": Task("digits", "configs/digits.yaml", 800, 400, 100, 3, 0.3e12, 64, 150,
                   grow_objective=("val_loss", "min")),
}


def load(task: Task, seed: int) -> Dataset:
    """The data every method of a seed trains, selects and is tested on."""
    return load_dataset(task.dataset, seed=seed, **task.base().dataset.loader_options())


# ----------------------------------------------------------------------- morphsearch


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict (``--grow`` overrides). A key that itself holds
    dots (a morphism's name: ``morphisms.widen.gradmax.k_fraction``, or
    ``morphisms.widen.gradmax`` itself) is matched whole where the dict has it; other
    parts are one key each, created when missing (a morphism the config does not list
    needs the whole ``morphisms=`` dict)."""
    parts = dotted.split(".")
    while len(parts) > 1 and ".".join(parts) not in tree:
        taken = next((n for n in range(len(parts) - 1, 0, -1)
                      if isinstance(tree.get(".".join(parts[:n])), dict)), 1)  # fmt: skip
        tree = tree.setdefault(".".join(parts[:taken]), {})
        parts = parts[taken:]
    tree[".".join(parts)] = value


def grow_config(task: Task, seed: int, inherit: bool, root: Path, name: str,
                grow: tuple[tuple[str, Any], ...] = ()) -> SearchConfig:  # fmt: skip
    """The shipped config with the bench's recipe, budget, seed and storage."""
    raw = task.base().model_dump(mode="json", exclude_unset=True)
    raw.update(name=name, seed=seed, storage=str(root), database=f"sqlite:///{root}/{name}.db",
               objectives=[dict(zip(("metric", "mode"), task.grow_objective))],
               source=str(ROOT / task.config))  # fmt: skip
    raw["budget"] = {
        **raw.get("budget", {}), "trials": task.trials, "time_s": task.time_s,
        "max_concurrent": 2, "steps_per_trial": task.steps, "child_steps": task.child_steps,
        "eval_every_steps": task.eval_every, "patience": task.patience,
        "max_train_flops": task.max_train_flops,
    }  # fmt: skip
    # seed_first: false (see the module docstring): two trials from the start; pool: best,
    # as there is one objective here; shrink_perturb as the shipped configs set it
    raw["selection"] = {**raw.get("selection", {}), "inherit_weights": inherit, "test_top": 0,
                        "seed_first": False, "pool": "best"}  # fmt: skip
    # ASHA on the growing searches' trials too, as on the reference (module docstring)
    raw["scheduler"] = {"asha": True, "grace_period": ASHA_GRACE, "reduction_factor": ASHA_RF}
    raw["resources"] = {"cpus": 1, "gpus": 0}
    for dotted, value in grow:
        _set(raw, dotted, value)
    return SearchConfig.model_validate(raw)


class TrialEnds(Callback):
    """When the driver saw each trial end, on its float clock: completed, stopped by
    ASHA, or failed (the trials the FLOP budget stops get no trial callback: ``collect``
    ends them with the run). Tune's own ``timestamp`` is whole seconds: a digits trial
    takes about one, so several end in the same second and the curve's order among them
    (which trial's FLOPs come first) would be the trial ids' order."""

    def __init__(self) -> None:
        self.ends: dict[str, float] = {}

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any,
                          **info: Any) -> None:  # fmt: skip
        self.ends[str(trial.trial_id)] = time.time()

    on_trial_error = on_trial_complete


def run_grow(config: SearchConfig) -> tuple[float, dict[str, float]]:
    """Start time and trial ends. The ends are lineage's, which the search's own callback
    stamps when the driver sees a trial end, as ``TrialEnds`` does for the others. A
    trial running when the budget stopped the search has none (lineage records a trial
    at its final report): ``collect`` ends it with the run."""
    start = time.time()
    run_search(config)
    with LineageStore(config.database) as store:
        trials = [store.trial(t) for t in store.trial_statuses(config.name or "search")]
    return start, {t.trial_id: t.ended.timestamp() for t in trials if t.ended is not None}


# ----------------------------------------------------------------------- from scratch


def scratch_setup(task: Task, seed: int, root: Path, name: str, data: Dataset,
                  asha: bool) -> TrialSetup:  # fmt: skip
    base = task.base()
    rungs, rung = [], ASHA_GRACE
    while asha and rung <= -(-task.steps // task.eval_every):
        rungs.append(rung)
        rung *= ASHA_RF
    return TrialSetup(
        search=name, artifacts_uri=str(root / name / "architectures"), dataset=task.dataset,
        dataset_options=tuple(sorted(base.dataset.loader_options().items())),
        data_seed=seed, batch_size=base.budget.batch_size, steps=task.steps,
        eval_every=task.eval_every, cpus=1.0, checkpoint_every_s=base.budget.checkpoint_every_s,
        report_every_s=base.budget.report_every_s, report_epochs=tuple(rungs),
        patience=task.patience, monitor="val_accuracy", monitor_mode="max",
    )  # fmt: skip


def run_scratch(task: Task, seed: int, method: str, root: Path, name: str,
                data: Dataset) -> tuple[float, dict[str, float]]:  # fmt: skip
    import _efficiency_space
    import optuna
    from ray import cloudpickle, tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    # bench/ is not on the workers' path: ship the trainable's module with it
    cloudpickle.register_pickle_by_value(_efficiency_space)
    asha = method == REFERENCE
    setup = scratch_setup(task, seed, root, name, data, asha)
    clock = TrialEnds()
    sampler = (optuna.samplers.RandomSampler(seed=seed) if method == "scratch random"
               else optuna.samplers.TPESampler(seed=seed, n_startup_trials=4))  # fmt: skip
    base = task.base()
    space = ScratchSpace(len(data.input_shape) - 1, tuple(base.selection.lr), seed,
                         base.budget.lr_schedule)  # fmt: skip
    trainable = tune.with_resources(
        tune.with_parameters(scratch_trial, setup=setup, input_shape=tuple(data.input_shape),
                             num_classes=data.num_outputs), {"cpu": 1.0, "gpu": 0})  # fmt: skip
    scheduler = ASHAScheduler(
        time_attr=EPOCH, metric="val_accuracy", mode="max",
        max_t=-(-task.steps // task.eval_every), grace_period=ASHA_GRACE,
        reduction_factor=ASHA_RF,
    ) if asha else None  # fmt: skip
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(space=space, metric="val_accuracy", mode="max",
                                    sampler=sampler, seed=seed),
            scheduler=scheduler, num_samples=task.trials, max_concurrent_trials=2,
            time_budget_s=task.time_s, reuse_actors=True,
        ),
        # result.json written by hand, as run_search does (its quiet mode, once set in
        # this process, turns off Tune's automatic loggers)
        run_config=tune.RunConfig(name=name, storage_path=str(root), verbose=0,
                                  callbacks=[JsonLoggerCallback(), clock],
                                  stop=TrainFlopsStopper(task.max_train_flops)),
    )
    start = time.time()
    tuner.fit()
    return start, clock.ends


@contextlib.contextmanager
def logged(path: Path) -> Iterator[None]:
    """A run's own output (morphsearch's progress, Tune's summary) goes to its log."""
    with path.open("w") as stream, contextlib.redirect_stdout(stream), \
            contextlib.redirect_stderr(stream):  # fmt: skip
        yield


# ----------------------------------------------------------------------- collection


def _test_accuracy(uri: str, data: Dataset) -> tuple[float, int]:
    arch = artifacts.read_architecture(uri)
    module = arch.to_module()
    module.eval()
    with torch.no_grad():
        acc = accuracy(module(data.x_test), data.y_test)
    assert acc is not None  # classification tasks only
    return acc, arch.num_params


def collect(path: Path, start: float, data: Dataset, ends: dict[str, float],
            done: float) -> list[TrialRow]:  # fmt: skip
    """One row per trial from Tune's ``result.json`` files; a trial's FLOPs are the
    largest it reported (its last result carries the kept evaluation's metrics). Its end
    is ``ends[trial_id]`` (the driver's float clock), else ``done``, the run's end (the
    trials the budget stopped)."""
    rows = []
    for result in sorted(path.glob("*/result.json")):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if not lines:
            continue
        last = lines[-1]
        trial_id = str(last["trial_id"])
        row = TrialRow(trial_id, ends.get(trial_id, done) - start,
                       max(spent_flops(r) for r in lines))  # fmt: skip
        config = last.get("config") or {}
        if "depth" in config:
            row.arch = describe(*layers_of(config))
        if last.get("weights_uri"):  # finished (not cut by the budget, not stopped by ASHA)
            row.val_accuracy = float(last["val_accuracy"])
            row.val_loss = float(last.get("val_loss", math.nan))
            row.test_accuracy, row.params = _test_accuracy(last["weights_uri"], data)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------- main


def run_one(task: Task, seed: int, method: str, repeat: int, root: Path, out: Path,
            grow: tuple[tuple[str, Any], ...], meter: CpuMeter | None = None) -> Run:  # fmt: skip
    data = load(task, seed)
    cpu = meter.total() if meter else math.nan
    name = f"{task.dataset}-{seed}-{METHODS.index(method)}-{repeat}"
    with logged(out / "logs" / f"{name}.log"):
        if method.startswith("morphsearch"):
            config = grow_config(task, seed, method == "morphsearch", root, name, grow)
            start, ends = run_grow(config)
        else:
            start, ends = run_scratch(task, seed, method, root, name, data)
    done = time.time()
    wall = done - start
    cpu = meter.total() - cpu if meter else math.nan
    return Run(method, task.dataset, seed, wall, task.max_train_flops, repeat, cpu,
               collect(root / name, start, data, ends, done))  # fmt: skip


def report(runs: list[Run], plot_path: Path, on: On = "test") -> None:
    for dataset in sorted({r.dataset for r in runs}):
        print(f"\n{table(runs, dataset, on=on)}\n\n{seed_table(runs, dataset, on)}")
    if on == "test":  # the spread and the plot are of the reported (test) figures
        if text := spread(runs):
            print(f"\n{text}")
        plot(runs, plot_path)
        print(f"\nplot: {plot_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=None, choices=list(TASKS),
                        help="default: all (--quick: digits)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: one dataset (digits) and seed, a quarter of the budget")
    parser.add_argument("--repeat", action="store_true",
                        help="run the first seed a second time and report the spread")
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="multiply every FLOP budget, trial cap and time cap")
    parser.add_argument("--out", default=None, help="results folder (default: a temp folder)")
    parser.add_argument("--plot", default=None,
                        help="default: bench/search_efficiency.png (--quick: under --out)")
    parser.add_argument("--report", nargs="+", default=None, metavar="RESULTS_JSON",
                        help="only print the tables and plot of results.json files (a "
                             "later file's run of the same method, dataset, seed and "
                             "repeat replaces an earlier one's)")
    parser.add_argument("--on", choices=["test", "val"], default="test",
                        help="what the tables measure: the picks' test accuracy (reported) "
                             "or their validation accuracy alone, to choose settings on "
                             "development seeds (--seeds 5 6 7 8 9) without reading test")
    parser.add_argument("--grow", nargs="*", default=[], metavar="KEY=YAML",
                        help="morphsearch config overrides, e.g. selection.pool=front or "
                             "morphisms.widen.gradmax.k_fraction=[0.5,2]")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="search-efficiency-"))
    (out / "logs").mkdir(parents=True, exist_ok=True)
    plot_path = Path(args.plot or (out / "search_efficiency.png" if args.quick
                                   else Path(__file__).with_suffix(".png")))  # fmt: skip
    if args.report:
        runs = merge([Run.from_json(r) for path in args.report
                      for r in json.loads(Path(path).read_text())])  # fmt: skip
        report(runs, plot_path, args.on)
        return
    import ray
    import yaml

    grow = tuple((k, yaml.safe_load(v)) for k, v in (item.split("=", 1) for item in args.grow))
    datasets, seeds, scale = args.datasets or list(TASKS), args.seeds, args.budget_scale
    if args.quick:
        datasets, seeds, scale = (args.datasets or ["digits"])[:1], seeds[:1], scale / 4
    jobs = [(d, s, 0) for d in datasets for s in seeds]
    if args.repeat:
        jobs += [(d, seeds[0], 1) for d in datasets]
    torch.set_num_threads(1)
    # address="local": a Ray of this process's own, never another search's on this host
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)  # fmt: skip
    runs: list[Run] = []
    began, meter = time.time(), CpuMeter()
    try:
        with tempfile.TemporaryDirectory(dir=out) as tmp:  # Tune's folders, weights
            for dataset, seed, repeat in jobs:
                task = TASKS[dataset]
                task = replace(task, max_train_flops=task.max_train_flops * scale,
                               trials=max(4, round(task.trials * min(1.0, scale * 2))),
                               time_s=task.time_s * min(1.0, scale * 2))  # fmt: skip
                for method in args.methods:
                    run = run_one(task, seed, method, repeat, Path(tmp), out, grow, meter)
                    runs.append(run)
                    capped = " (time cap)" if run.wall_s >= task.time_s else ""
                    print(f"{dataset} seed {seed}{' repeat' if repeat else ''} {method}: "
                          f"{len(run.trials)} trials, {run.total_flops / 1e9:.0f} GFLOPs, "
                          f"{run.wall_s:.0f} s{capped}, {run.cpu_s:.0f} CPU s, "
                          f"best-by-val {args.on} {run.final_on(args.on):.4f}",
                          flush=True)  # fmt: skip
                    (out / "results.json").write_text(json.dumps([r.to_json() for r in runs]))
    finally:
        ray.shutdown()
        meter.close()
    report(runs, plot_path, args.on)
    print(f"results: {out / 'results.json'}; total {time.time() - began:.0f} s, "
          f"{meter.total():.0f} CPU s")  # fmt: skip


if __name__ == "__main__":
    main()
