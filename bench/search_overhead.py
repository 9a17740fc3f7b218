"""Per-trial overhead of Ray Tune + Optuna + lineage against the trial's own training time.

One trial at a time (``max_concurrent=1``, one torch thread), trials sized to about
``--trial-seconds`` of training, calibrated in this process by timing the same epoch
loop without Ray. Overhead = wall time of ``Tuner.fit`` - the trials' own time
(morphism, loading, training and evaluation, as each trial measured it). Three searches
in one Ray session: reporting to Tune every epoch (the baseline), the default
(``budget.report_every_s``), and the default with fewer trials; the last two split the
overhead into a fixed cost per search and a marginal cost per trial. Every search must
still record every epoch in lineage. The one-off ``ray.init`` is reported apart.

    .venv/bin/python bench/search_overhead.py --trials 12 --short-trials 4 --trial-seconds 5

``--suggest-only`` times the driver's suggestion alone (no Ray): a lineage with a pool of
``--pool`` trained architectures, GradMax among the morphisms, and ``--suggestions``
suggestions, deciding structure with ``morphisms.plan`` and one lineage query per parent
(``plan``) or, as before, by applying each candidate morphism on a probe batch with one
lineage query per child (``apply``).

    .venv/bin/python bench/search_overhead.py --suggest-only --pool 8 --suggestions 40
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _epoch_seconds(batch_size: int, hidden: list[int]) -> float:
    """Seconds per epoch of the seed MLP on digits, without Ray (the baseline): the
    trials' own step loop, timed over three epochs after a warm-up one."""
    from morphsearch import builders
    from morphsearch.data import load_dataset
    from morphsearch.growth.trainer import GrowingTrainer, GrowthConfig

    data = load_dataset("digits", seed=0, image=False)
    per_epoch = math.ceil(len(data.split("train")[0]) / batch_size)
    config = GrowthConfig(steps=4 * per_epoch, batch_size=batch_size, device="cpu")
    trainer = GrowingTrainer(builders.mlp([64, *hidden, 10]), data, config)
    trainer.advance(per_epoch)  # warm-up
    start = time.perf_counter()
    trainer.advance(3 * per_epoch)
    return (time.perf_counter() - start) / 3


def _trial_seconds(db: Path) -> list[float]:
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "select t.trial_id, m.name, m.evaluation, m.value from metrics m join trials t "
            "on t.id = m.trial_id where m.name in ('train_time_s', 'setup_time_s')"
        ).fetchall()
    per: dict[str, float] = {}
    setup: dict[str, float] = {}
    for trial, name, _evaluation, value in rows:
        if name == "train_time_s":
            per[trial] = per.get(trial, 0.0) + value
        else:
            setup[trial] = value
    return [per[t] + setup.get(t, 0.0) for t in per]


TIMERS: dict[str, float] = {}


def _timed(owner: type, method: str, key: str) -> None:
    """Wrap ``owner.method`` to add its wall time to ``TIMERS[key]`` (driver-side parts)."""
    original = getattr(owner, method)

    def wrapper(*args: object, **kwargs: object) -> object:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            TIMERS[key] = TIMERS.get(key, 0.0) + time.perf_counter() - start

    setattr(owner, method, wrapper)


def _search(args: argparse.Namespace, epochs: int, trials: int, report_every_s: float,
            tag: str) -> tuple[float, list[float], dict[str, float]]:
    """One search; (Tuner.fit wall time, each trial's own time, driver-side timers)."""
    from morphsearch.search.config import SearchConfig
    from morphsearch.search.runner import run_search

    folder = Path(tempfile.mkdtemp(prefix=f"ms-bench-{tag}-"))
    config = SearchConfig.model_validate(
        {
            "name": "bench",
            "seed_graph": {"builder": "mlp", "hidden": args.hidden},
            "dataset": {"name": "digits"},
            "budget": {
                "trials": trials,
                "max_concurrent": args.concurrent,
                "epochs_per_trial": epochs,
                # every trial trains its full ~5 s: no early stopping, children train as
                # long as the seed (the defaults would shorten trials and inflate the ratio)
                "child_epochs": epochs,
                "patience": None,
                "batch_size": args.batch_size,
                "report_every_s": report_every_s,
            },
            "morphisms": {"widen.random": {"k": [1, 8]}, "widen.split": {"k": [1, 8]}},
            "database": f"sqlite:///{folder}/lineage.db",
            "storage": str(folder / "runs"),
        }
    )
    TIMERS.clear()
    start = time.perf_counter()
    run_search(config)
    fit_s = time.perf_counter() - start
    own = _trial_seconds(folder / "lineage.db")
    epochs_recorded = _epochs_recorded(folder / "lineage.db")
    if epochs_recorded != len(own) * epochs:  # lineage must still hold every epoch
        raise SystemExit(f"{tag}: lineage has {epochs_recorded} epoch rows, "
                         f"expected {len(own) * epochs}")
    return fit_s, own, dict(TIMERS)


def _epochs_recorded(db: Path) -> int:
    with sqlite3.connect(db) as con:
        (count,) = con.execute(
            "select count(*) from metrics where name = 'train_loss'"
        ).fetchone()
    return int(count)


def _suggestion_ms(pool: int, suggestions: int, resolve: str, hidden: list[int]) -> float:
    """Mean ms per suggestion of ``MorphismSpace`` over a recorded pool (see --suggest-only)."""
    import optuna

    from morphsearch import builders, morphisms
    from morphsearch.arch import Architecture
    from morphsearch.data import load_dataset
    from morphsearch.lineage import ArchitectureIn, LineageStore
    from morphsearch.search.config import SearchConfig
    from morphsearch.search.space import MorphismSpace, ParentInfo

    class ApplySpace(MorphismSpace):  # the space before structure planning
        def _plan(self, morphism: str, arch: Architecture, site: str,
                  params: dict[str, Any]) -> Architecture:  # fmt: skip
            return morphisms.apply(morphism, arch, site, batch=self.probe, seed=0,
                                   **params).child  # fmt: skip

        def _grown_from(self, parent_id: str) -> set[tuple[str, str]]:
            return {(parent_id, self.store.architecture(n.arch_id).structure_hash)
                    for n in self.store.descendants(parent_id, max_depth=1)[1:]}  # fmt: skip

    folder = Path(tempfile.mkdtemp(prefix="ms-suggest-"))
    db = f"sqlite:///{folder}/lineage.db"
    config = SearchConfig.model_validate({
        "name": "s", "seed_graph": {"builder": "mlp", "hidden": hidden},
        "dataset": {"name": "digits"}, "database": db,
        "morphisms": {"widen.gradmax": {"k": [1, 8]}, "widen.split": {"k": [1, 8]},
                      "deepen.identity": {}},
        "selection": {"pool_size": pool, "max_children": None},
    })  # fmt: skip
    seed = builders.mlp([64, *hidden, 10], seed=0)

    def record(arch: Architecture, arch_id: str) -> ArchitectureIn:
        return ArchitectureIn(arch_id, arch.to_json(), arch.structure_hash, arch.num_params,
                              arch.flops, None, f"{arch_id}.safetensors", None)  # fmt: skip

    with LineageStore(db, write=True) as store:
        store.create_search("s", config.model_dump(mode="json"))
        store.record_seed("s", record(seed, "s/seed"))
        for i in range(pool):  # a trained pool: children of the seed, scored
            child = morphisms.apply("widen.random", seed, ("fc1", "fc2")[i % 2], k=i + 1).child
            store.record_trial("s", f"t{i}", "s/seed", record(child, f"s/t{i}"))
            store.record_metrics(f"t{i}", 1, {"val_accuracy": 0.5 + i / 100})
    data = load_dataset("digits", seed=0, image=False)
    probe = (data.split("train")[0][:32], data.split("train")[1][:32])
    info = ParentInfo("s/seed", "s/seed.safetensors", None, seed.to_json())
    space = (MorphismSpace if resolve == "plan" else ApplySpace)(config, "s", db, probe, info)
    space.suggested.add(("s/seed", "train"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=0))  # fmt: skip
    space(study.ask())  # warm-up (imports, first queries)
    start = time.perf_counter()
    for _ in range(suggestions):
        space(study.ask())
    return 1000 * (time.perf_counter() - start) / suggestions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suggest-only", action="store_true")
    parser.add_argument("--pool", type=int, default=8)
    parser.add_argument("--suggestions", type=int, default=40)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--short-trials", type=int, default=4,
                        help="trials of the second, shorter search (fixed vs per-trial cost)")
    parser.add_argument("--trial-seconds", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--concurrent", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.suggest_only:
        print("| resolve | pool | suggestions | ms per suggestion |\n|---|---:|---:|---:|")
        for resolve in ("apply", "plan"):
            ms = _suggestion_ms(args.pool, args.suggestions, resolve, args.hidden)
            print(f"| {resolve} | {args.pool} | {args.suggestions} | {ms:.1f} |")
        return
    epoch_s = _epoch_seconds(args.batch_size, args.hidden)
    epochs = max(1, math.ceil(args.trial_seconds / epoch_s))

    import ray

    from morphsearch.search.callback import LineageCallback
    from morphsearch.search.config import BudgetConfig
    from morphsearch.search.space import MorphismSpace

    for method in ("on_trial_result", "on_trial_complete"):
        _timed(LineageCallback, method, "lineage callback")
    _timed(MorphismSpace, "__call__", "Optuna suggest")
    start = time.perf_counter()
    ray.init(
        num_cpus=args.concurrent,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    init_s = time.perf_counter() - start
    default = BudgetConfig().report_every_s
    runs = [
        (f"report every epoch, {args.trials} trials", args.trials, 0.0),
        (f"default (report every {default:g} s), {args.trials} trials", args.trials, default),
        (f"default, {args.short_trials} trials", args.short_trials, default),
    ]
    print(f"baseline epoch (no Ray): {epoch_s * 1000:.1f} ms -> {epochs} epochs per trial")
    print(f"ray.init (once): {init_s:.2f} s")
    rows = []
    for i, (label, trials, every) in enumerate(runs):
        fit_s, own, timers = _search(args, epochs, trials, every, f"run{i}")
        over = fit_s * args.concurrent - sum(own)
        rows.append((label, len(own), fit_s, own, over, timers))
    print("| search | trials | trials' own time (mean) | search wall time | overhead/trial "
          "| of which lineage callback | of which Optuna suggest |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, n, fit_s, own, over, timers in rows:
        mean = sum(own) / n
        print(f"| {label} | {n} | {mean:.2f} s | {fit_s:.1f} s | {over / n:.2f} s = "
              f"{100 * over / sum(own):.1f}% | {timers.get('lineage callback', 0) / n:.3f} s "
              f"| {timers.get('Optuna suggest', 0) / n:.3f} s |")
    (_, n_long, _, own_long, over_long, _), (_, n_short, _, _, over_short, _) = rows[1], rows[2]
    marginal = (over_long - over_short) / (n_long - n_short)
    fixed = over_long - marginal * n_long
    mean_long = sum(own_long) / n_long
    print(f"default setting: fixed cost per search {fixed:.2f} s (Tune start-up, first "
          f"worker, shutdown); marginal overhead per trial {marginal:.2f} s = "
          f"{100 * marginal / mean_long:.1f}% of a {mean_long:.2f}-s trial")
    ray.shutdown()


if __name__ == "__main__":
    main()
