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
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import tempfile
import time
from pathlib import Path

import torch


def _epoch_seconds(batch_size: int, hidden: list[int]) -> float:
    """Seconds per epoch of the seed MLP on digits, without Ray (the baseline)."""
    from morphsearch import builders
    from morphsearch.data import load_dataset
    from morphsearch.search.trainable import _epoch

    data = load_dataset("digits", seed=0, image=False)  # 64 features for the MLP
    module = builders.mlp([64, *hidden, 10]).to_module()
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(0)
    _epoch(module, optimizer, data, batch_size, generator, torch.device("cpu"))  # warm-up
    start = time.perf_counter()
    for _ in range(3):
        _epoch(module, optimizer, data, batch_size, generator, torch.device("cpu"))
    return (time.perf_counter() - start) / 3


def _trial_seconds(db: Path) -> list[float]:
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "select t.trial_id, m.name, m.budget, m.value from metrics m join trials t "
            "on t.id = m.trial_id where m.name in ('train_time_s', 'setup_time_s')"
        ).fetchall()
    per: dict[str, float] = {}
    setup: dict[str, float] = {}
    for trial, name, _budget, value in rows:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--short-trials", type=int, default=4,
                        help="trials of the second, shorter search (fixed vs per-trial cost)")
    parser.add_argument("--trial-seconds", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--concurrent", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
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
