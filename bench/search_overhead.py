"""Per-trial overhead of Ray Tune + Optuna + lineage against the trial's own training time.

One trial at a time (``max_concurrent=1``, one torch thread), trials sized to about
``--trial-seconds`` of training, calibrated in this process by timing the same epoch
loop without Ray. Overhead per trial = (wall time of ``Tuner.fit`` - the trials' own
time: morphism, loading, training and evaluation, as each trial measured it) / trials.
The one-off ``ray.init`` is reported apart; Tune's own start-up is in the overhead.

    .venv/bin/python bench/search_overhead.py --trials 6 --trial-seconds 5
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

    data = load_dataset("digits", seed=0)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
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
    from morphsearch.search.config import SearchConfig
    from morphsearch.search.runner import run_search
    from morphsearch.search.space import MorphismSpace

    for method in ("on_trial_result", "on_trial_complete"):
        _timed(LineageCallback, method, "lineage callback")
    _timed(MorphismSpace, "__call__", "Optuna suggest + child resolution")
    folder = Path(tempfile.mkdtemp(prefix="ms-bench-"))
    config = SearchConfig.model_validate(
        {
            "name": "bench",
            "seed_graph": {"builder": "mlp", "hidden": args.hidden},
            "dataset": {"name": "digits"},
            "budget": {
                "trials": args.trials,
                "max_concurrent": args.concurrent,
                "epochs_per_trial": epochs,
                # every trial trains its full ~5 s: no early stopping, children train as
                # long as the seed (the defaults would shorten trials and inflate the ratio)
                "child_epochs": epochs,
                "patience": None,
                "batch_size": args.batch_size,
            },
            "morphisms": {"widen.random": {"k": [1, 8]}, "widen.split": {"k": [1, 8]}},
            "database": f"sqlite:///{folder}/lineage.db",
            "storage": str(folder / "runs"),
        }
    )
    start = time.perf_counter()
    ray.init(
        num_cpus=args.concurrent,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    init_s = time.perf_counter() - start
    start = time.perf_counter()
    run_search(config)
    fit_s = time.perf_counter() - start
    own = _trial_seconds(folder / "lineage.db")
    overhead = (fit_s * args.concurrent - sum(own)) / len(own)
    mean_own = sum(own) / len(own)
    print(f"baseline epoch (no Ray): {epoch_s * 1000:.1f} ms -> {epochs} epochs per trial")
    print(f"ray.init (once): {init_s:.2f} s")
    print(
        f"trials: {len(own)}; search wall time {fit_s:.2f} s; trials' own time "
        f"{sum(own):.2f} s (mean {mean_own:.2f} s per trial)"
    )
    print(
        f"overhead per trial (Ray + Optuna + lineage + checkpoints): {overhead:.2f} s = "
        f"{100 * overhead / mean_own:.1f}% of the trial's own time"
    )
    for key, seconds in TIMERS.items():
        print(f"  of which {key}: {seconds / len(own):.3f} s per trial")
    ray.shutdown()


if __name__ == "__main__":
    main()
