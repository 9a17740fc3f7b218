"""Search efficiency: growing with morphisms vs architecture search from scratch (issue 8).

Four methods, one Ray Tune harness (same trainable ``train_child``, same epochs for a
network trained from scratch, the same early stopping (3 epochs without a validation
gain), Adam with an Optuna-chosen lr from the same range on the same schedule within a
trial (cosine by default, ``--lr-schedule``), batch size, resources, concurrency and the
same compute budget: ``budget.max_train_flops`` training FLOPs and a trial cap), on
digits and MNIST-1D, several seeds each:

- ``morphsearch``: ``run_search`` with GradMax, Net2Wider split, splitting steepest
  descent, identity and skip deepening, children inherit their parent's weights and
  Adam state (``selection.inherit_optimizer``) and fine-tune for
  ``budget.child_epochs``; widening adds 25-100 % of the layer's width (``k_fraction``);
  a parent leaves the pool after 3 children (``max_children``);
- ``morphsearch, no inheritance``: the same search with ``selection.inherit_weights:
  false`` (every child re-initialised), isolating the value of inheritance;
- ``scratch TPE``: Optuna TPE over MLP depth and widths (``OptunaSearch`` in Tune),
  every trial trained from a fresh initialisation: what a user would otherwise run;
- ``scratch random``: the same space and harness with Optuna's ``RandomSampler``.

All networks use tanh: ``split.steepest`` refuses ReLU sites (zero second derivative),
and a shared activation keeps the comparison about growth, not activations.

Training FLOPs = 3x ``arch.flops`` per training sample per epoch, plus each morphism's
probe-batch passes (the ``train_flops`` metric of ``train_child``); evaluation passes are
not counted. At each trial's completion the curve takes the trial with the best
validation accuracy so far and plots its TEST accuracy (measured here from its saved
weights), against the cumulative training FLOPs of completed trials and wall time.

    /work/main/.venv/bin/python bench/search_efficiency.py            # full (~7 min on 2 cores)
    /work/main/.venv/bin/python bench/search_efficiency.py --quick    # 1 seed, a quarter of the budget (~1.5 min)
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from morphsearch import artifacts, builders
from morphsearch.data import Dataset, load_dataset
from morphsearch.losses import accuracy
from morphsearch.search.config import SearchConfig
from morphsearch.search.protocol import TrialPlan
from morphsearch.search.runner import TrainFlopsStopper, run_search
from morphsearch.search.trainable import TrialSetup, train_child

ACTIVATION = "tanh"
METHODS = ("morphsearch", "morphsearch, no inheritance", "scratch TPE", "scratch random")


@dataclass(frozen=True)
class Task:
    """One dataset's shared settings: every method gets exactly these."""

    dataset: str
    batch_size: int
    epochs: int  # scratch trials and morphsearch's seed (and re-initialised children)
    child_epochs: int  # morphsearch children that inherit: fine-tuning (the default: half)
    max_train_flops: float
    trials: int
    seed_hidden: tuple[int, ...]
    max_depth: int = 3
    widths: tuple[int, int] = (16, 256)
    # units a widening morphism adds per child, as a fraction of the layer's width
    widen_fraction: tuple[float, float] = (0.25, 1.0)
    patience: int = 3  # every trial of every method stops after 3 epochs without a gain
    lr: tuple[float, float] = (1e-3, 3e-2)
    lr_schedule: str = "cosine"  # within every trial of every method (budget.lr_schedule)
    # morphsearch config overrides, dotted paths (--grow selection.inherit_optimizer=false)
    grow: tuple[tuple[str, Any], ...] = ()

    def max_params(self, data: Dataset) -> int:
        """The largest MLP of the scratch space: morphsearch may not grow beyond it."""
        width_in = int(torch.tensor(data.input_shape).prod())
        big = [width_in, *[self.widths[1]] * self.max_depth, data.num_outputs]
        return sum((a + 1) * b for a, b in itertools.pairwise(big))


TASKS = {
    # seed 64:64:10 for both: a 16-unit digits seed spent the search growing to the widths
    # that win (its best was 0.955 vs 0.969 from this seed, same budget; BENCHMARKS.md)
    "digits": Task("digits", 64, 10, 5, 30e9, 40, (64,)),
    "mnist1d": Task("mnist1d", 128, 20, 10, 120e9, 40, (64,)),
}


@dataclass
class TrialRow:
    trial_id: str
    end: float  # seconds since the search started
    train_flops: float
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    params: int | None = None


@dataclass
class Run:
    method: str
    dataset: str
    seed: int
    wall_s: float
    trials: list[TrialRow] = field(default_factory=list)

    def curve(self) -> list[tuple[float, float, float]]:
        """(cumulative FLOPs, wall s, test accuracy of the best-by-validation trial so far)."""
        out, spent, best = [], 0.0, (-1.0, 0.0)
        for row in sorted(self.trials, key=lambda r: r.end):
            spent += row.train_flops
            val, test = row.val_accuracy, row.test_accuracy
            if val is not None and test is not None and val > best[0]:
                best = (val, test)
            if best[0] >= 0:
                out.append((spent, row.end, best[1]))
        return out

    def reach(self, target: float) -> tuple[float, float] | None:
        """(FLOPs, wall s) when the curve first reaches ``target``; None if never."""
        for flops, wall, acc in self.curve():
            if acc >= target - 1e-9:
                return flops, wall
        return None

    @property
    def total_flops(self) -> float:
        return sum(r.train_flops for r in self.trials)

    @property
    def final(self) -> float:
        curve = self.curve()
        return curve[-1][2] if curve else math.nan


# ----------------------------------------------------------------------- scratch search


@dataclass(frozen=True)
class ScratchSpace:
    """Define-by-run space: lr, depth, then one width per layer (log-uniform, as a user would).

    A module-level class, not a closure: Tune pickles the searcher in its checkpoints.
    """

    task: Task

    def __call__(self, trial: Any) -> dict[str, Any]:
        trial.suggest_float("lr", *self.task.lr, log=True)
        depth = trial.suggest_int("depth", 1, self.task.max_depth)
        for i in range(1, depth + 1):
            trial.suggest_int(f"w{i}", *self.task.widths, log=True)
        # the same schedule within a trial as morphsearch's (budget.lr_schedule)
        return {"lr_schedule": self.task.lr_schedule}


def scratch_trial(config: dict[str, Any], setup: TrialSetup, shape: tuple[int, int],
                  input_shape: tuple[int, ...]) -> None:
    """Build the sampled MLP with fresh weights and train it with the same ``train_child``."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id() or "local"
    seed = zlib.crc32(trial_id.encode()) % 100_000
    widths = [int(config[f"w{i}"]) for i in range(1, int(config["depth"]) + 1)]
    arch = builders.mlp([shape[0], *widths, shape[1]], activation=ACTIVATION, seed=seed,
                        input_shape=input_shape)  # flattens the dataset's natural layout
    ref = artifacts.write_architecture(arch, setup.artifacts_uri, f"init-{trial_id}")
    child = TrialPlan(
        parent_id="", parent_uri=ref.uri, parent_sha256=ref.sha256, lr=float(config["lr"]),
        trial_seed=seed, lr_schedule=str(config.get("lr_schedule", "constant")),
    ).to_config()
    train_child(child, setup)


def run_scratch(task: Task, seed: int, sampler: str, root: Path, name: str) -> float:
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    # the data split follows the seed, as in run_search (load_dataset(seed=config.seed))
    data = load_dataset(task.dataset, seed=seed)
    setup = TrialSetup(
        search=name,
        artifacts_uri=str(root / name / "architectures"),
        dataset=task.dataset,
        dataset_options=(),
        data_seed=seed,
        batch_size=task.batch_size,
        # the same budget as morphsearch's seed: epochs_per_trial, evaluated every epoch
        steps=task.epochs * math.ceil(len(data.split("train")[0]) / task.batch_size),
        eval_every=math.ceil(len(data.split("train")[0]) / task.batch_size),
        cpus=1.0,
        # the same early stopping as morphsearch's trials (budget.patience, first objective)
        patience=task.patience,
        monitor="val_accuracy",
        monitor_mode="max",
    )
    # the same TPE settings as morphsearch's searcher (searcher.make_searcher)
    chosen = (
        optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)
        if sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    shape = (int(torch.tensor(data.input_shape).prod()), data.num_outputs)
    trainable = tune.with_resources(
        tune.with_parameters(scratch_trial, setup=setup, shape=shape,
                             input_shape=tuple(data.input_shape)), {"cpu": 1.0, "gpu": 0}
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(
                space=ScratchSpace(task),
                metric="val_accuracy",
                mode="max",
                sampler=chosen,
                seed=seed,
            ),
            num_samples=task.trials,
            max_concurrent_trials=2,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(root),
            stop=TrainFlopsStopper(task.max_train_flops),
            verbose=0,
        ),
    )
    start = time.time()
    tuner.fit()
    return start


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict (``--grow`` overrides)."""
    *path, last = dotted.split(".")
    for key in path:
        tree = tree.setdefault(key, {})
    tree[last] = value


def run_grow(task: Task, seed: int, inherit: bool, root: Path, name: str, data: Dataset) -> float:
    raw: dict[str, Any] = {
        "name": name,
        "seed": seed,
        "seed_graph": {
            "builder": "mlp",
            "hidden": list(task.seed_hidden),
            "args": {"activation": ACTIVATION},
        },
        "dataset": {"name": task.dataset},
        "objectives": [{"metric": "val_accuracy", "mode": "max"}],
        "budget": {
            "trials": task.trials,
            "max_concurrent": 2,
            "epochs_per_trial": task.epochs,
            "child_epochs": task.child_epochs,
            "patience": task.patience,
            "batch_size": task.batch_size,
            "max_params": task.max_params(data),
            "max_train_flops": task.max_train_flops,
            "lr_schedule": task.lr_schedule,
        },
        "morphisms": {
            "widen.gradmax": {"k_fraction": list(task.widen_fraction)},
            "widen.split": {"k_fraction": list(task.widen_fraction)},
            "split.steepest": {"k_fraction": list(task.widen_fraction)},
            "deepen.identity": {},
            "deepen.skip": {},
        },
        "selection": {
            "pool_size": 3,
            "lr": list(task.lr),
            "inherit_weights": inherit,
            "max_children": 3,
        },
        "resources": {"cpus": 1},
        "storage": str(root),
        "database": f"sqlite:///{root}/{name}.db",
    }
    for dotted, value in task.grow:
        _set(raw, dotted, value)
    config = SearchConfig.model_validate(raw)
    start = time.time()
    run_search(config)
    return start


# ----------------------------------------------------------------------- collection


def _test_accuracy(uri: str, data: Dataset) -> tuple[float, int]:
    arch = artifacts.read_architecture(uri)
    module = arch.to_module()
    module.eval()
    with torch.no_grad():
        acc = accuracy(module(data.x_test), data.y_test)
    assert acc is not None  # classification tasks only
    return acc, arch.num_params


def collect(path: Path, start: float, data: Dataset) -> list[TrialRow]:
    rows = []
    for result in sorted(path.glob("*/result.json")):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if not lines:
            continue
        last = lines[-1]
        row = TrialRow(
            str(last["trial_id"]),
            float(last["timestamp"]) - start,
            float(last.get("train_flops", 0.0)),
        )
        if last.get("weights_uri"):  # finished all its epochs (not cut by the budget)
            row.val_accuracy = float(last["val_accuracy"])
            row.test_accuracy, row.params = _test_accuracy(last["weights_uri"], data)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------- report


def _fmt_flops(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e9:.2f}"


def table(runs: list[Run], dataset: str) -> str:
    mine = [r for r in runs if r.dataset == dataset]
    seeds = sorted({r.seed for r in mine})
    by = {(r.method, r.seed): r for r in mine}
    targets = {s: by[("scratch TPE", s)].final for s in seeds if ("scratch TPE", s) in by}
    lines = [
        f"| {dataset} method | best test acc (mean) | trials | total GFLOPs | wall s | "
        "reached TPE best | GFLOPs to reach (median) | x TPE's | wall s to reach (median) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    tpe_reach = {s: by[("scratch TPE", s)].reach(targets[s]) for s in targets}
    for method in METHODS:
        rs = [by[(method, s)] for s in seeds if (method, s) in by]
        if not rs:
            continue
        reached = [(r.seed, r.reach(targets[r.seed])) for r in rs if r.seed in targets]
        hits = [(s, x) for s, x in reached if x is not None]
        ratios = [x[0] / tpe_reach[s][0] for s, x in hits if tpe_reach[s]]  # type: ignore[index]
        flops = statistics.median(x[0] for _, x in hits) if hits else None
        wall = statistics.median(x[1] for _, x in hits) if hits else None
        ratio = f"{statistics.median(ratios):.2f}" if ratios else "-"
        lines.append(
            f"| {method} | {statistics.mean(r.final for r in rs):.4f} | "
            f"{statistics.mean(len(r.trials) for r in rs):.0f} | "
            f"{statistics.mean(r.total_flops for r in rs) / 1e9:.1f} | "
            f"{statistics.mean(r.wall_s for r in rs):.0f} | {len(hits)}/{len(rs)} | "
            f"{_fmt_flops(flops)} | {ratio} | "
            f"{'-' if wall is None else f'{wall:.0f}'} |"
        )
    return "\n".join(lines)


def plot(runs: list[Run], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r.dataset for r in runs})
    fig, axes = plt.subplots(2, len(datasets), figsize=(5.5 * len(datasets), 7), squeeze=False)
    colors = dict(zip(METHODS, ("C0", "C1", "C2", "C7"), strict=True))
    for col, dataset in enumerate(datasets):
        for method in METHODS:
            rs = [r for r in runs if r.dataset == dataset and r.method == method]
            for i, r in enumerate(rs):
                curve = r.curve()
                if not curve:
                    continue
                flops, wall, acc = zip(*curve, strict=True)
                label = method if i == 0 else None
                kw = {"color": colors[method], "alpha": 0.8, "where": "post", "label": label}
                axes[0][col].step([f / 1e9 for f in flops], acc, **kw)
                axes[1][col].step(wall, acc, **kw)
        axes[0][col].set_xscale("log")
        axes[0][col].set_xlabel("cumulative training GFLOPs (log)")
        axes[1][col].set_xlabel("wall time (s)")
        for row in (0, 1):
            axes[row][col].set_ylabel("test accuracy (best by validation)")
            axes[row][col].set_title(dataset)
            axes[row][col].grid(alpha=0.3)
            finals = [r.final for r in runs if r.dataset == dataset and not math.isnan(r.final)]
            if finals:
                axes[row][col].set_ylim(min(finals) - 0.08, max(finals) + 0.02)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=list(TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--quick", action="store_true", help="1 seed, a quarter of the budget")
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".png")))
    parser.add_argument("--json", default=None, help="also write the raw runs here")
    parser.add_argument(
        "--lr-schedule",
        choices=("constant", "cosine"),
        default=Task.lr_schedule,
        help="learning rate within every trial of every method",
    )
    parser.add_argument(
        "--grow",
        nargs="*",
        default=[],
        metavar="KEY=YAML",
        help="morphsearch config overrides, e.g. selection.inherit_optimizer=false",
    )
    args = parser.parse_args()
    import yaml

    grow = tuple((k, yaml.safe_load(v)) for k, v in (item.split("=", 1) for item in args.grow))
    import ray

    torch.set_num_threads(1)
    seeds = args.seeds[:1] if args.quick else args.seeds
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    runs: list[Run] = []
    began = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for dataset in args.datasets:
            task = TASKS[dataset]
            task = Task(**{**task.__dict__, "lr_schedule": args.lr_schedule, "grow": grow})
            if args.quick:
                budget = task.max_train_flops / 4
                task = Task(**{**task.__dict__, "trials": 12, "max_train_flops": budget})
            for seed in seeds:
                # every method of a seed trains, selects and is tested on the same split
                data = load_dataset(dataset, seed=seed)
                for method in args.methods:
                    name = f"{dataset}-{seed}-{METHODS.index(method)}"
                    if method.startswith("morphsearch"):
                        start = run_grow(task, seed, method == "morphsearch", root, name, data)
                    else:
                        start = run_scratch(task, seed, method.split()[-1][:6].lower(), root, name)
                    wall = time.time() - start
                    run = Run(method, dataset, seed, wall, collect(root / name, start, data))
                    runs.append(run)
                    print(
                        f"{dataset} seed {seed} {method}: {len(run.trials)} trials, "
                        f"{run.total_flops / 1e9:.1f} GFLOPs, {wall:.0f} s, "
                        f"best test {run.final:.4f}",
                        flush=True,
                    )
    ray.shutdown()
    if args.json:
        raw = [r.__dict__ | {"trials": [t.__dict__ for t in r.trials]} for r in runs]
        Path(args.json).write_text(json.dumps(raw))
    for dataset in args.datasets:
        print()
        print(table(runs, dataset))
    plot(runs, Path(args.out))
    print(f"\ntotal {time.time() - began:.0f} s; plot: {args.out}")


if __name__ == "__main__":
    main()
