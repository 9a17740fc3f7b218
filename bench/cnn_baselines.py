"""Grown CNNs against the hand-written baselines on the same data and splits (issue 13).

Baselines (``--part baselines``): the MNIST-1D paper's MLP and CNN and a textbook digits
CNN, written in plain PyTorch and trained with the paper's recipe (Adam lr 1e-2, batch
100, 6,000 steps, final weights) on the same training split the searches use, tested on
the same test split (bench/_paper_models.py).

Searches (``--part search``): ``morphsearch search CONFIG`` for each seed (the search
seed moves the validation split and Optuna's draws; the data generation is fixed), then
from lineage: the best architecture by the search's first objective (its validation
metric, as ``lineage best`` ranks it) and its test accuracy (scored once by
the search at its end, never used to choose), and the smallest architecture on the
validation-vs-parameters front that is at least as good on test as a given reference.

    python bench/cnn_baselines.py --part baselines                        # ~2 min
    python bench/cnn_baselines.py --part search --config configs/mnist1d.yaml --seeds 0 1 2
    python bench/cnn_baselines.py --part search --config configs/digits.yaml --seeds 0 1 2
    python bench/cnn_baselines.py --part search --config configs/mnist1d_from_mlp.yaml --seeds 0

Each search runs in its own process with its own SQLite database under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from morphsearch.search.config import load_config

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _paper_models import (
    PaperMLP,
    accuracy,
    digits_cnn,
    num_params,
    paper_cnn,
    train_paper_recipe,
)

ROOT = Path(__file__).resolve().parent.parent


def baselines(seeds: list[int]) -> list[dict[str, Any]]:
    from morphsearch.data import load_dataset

    torch.set_num_threads(1)
    rows = []
    cases = [
        ("mnist1d", {"val_size": 1000}, "paper MLP", lambda: PaperMLP()),
        ("mnist1d", {"val_size": 1000}, "paper CNN (25 channels)", lambda: paper_cnn()),
        ("digits", {}, "textbook CNN (2x conv 32)", lambda: digits_cnn()),
    ]
    for dataset, options, label, make in cases:
        data = load_dataset(dataset, seed=0, **options)
        x, y = data.split("train")
        xt, yt = data.split("test")
        accs, secs = [], []
        for seed in seeds:
            torch.manual_seed(seed)
            model = make()
            start = time.perf_counter()
            train_paper_recipe(model, x, y, seed=seed)
            secs.append(time.perf_counter() - start)
            accs.append(accuracy(model, xt, yt))
        rows.append({"dataset": dataset, "model": label, "params": num_params(make()),
                     "test": accs, "seconds": secs})
        print(_baseline_line(rows[-1]), flush=True)
    return rows


def _baseline_line(row: dict[str, Any]) -> str:
    accs = row["test"]
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    return (f"| {row['dataset']} | {row['model']} | {row['params']:,} | "
            f"{100 * statistics.mean(accs):.1f} ± {100 * sd:.1f} | "
            f"{statistics.mean(row['seconds']):.0f} s |")


def run_search(config: Path, seed: int, out: Path) -> dict[str, Any]:
    name = f"{config.stem}-s{seed}"
    db = f"sqlite:///{out / (name + '.db')}"
    cmd = [sys.executable, "-m", "morphsearch", "search", str(config), "--name", name,
           "--db", db, "--storage", str(out / "runs"), "--seed", str(seed)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    first = load_config(config).objectives[0]  # the search's own validation metric
    return {"config": str(config), "seed": seed, "wall_s": wall,
            "picked_by": first.metric, **_read(db, name, first.metric, first.mode)}


def _read(db: str, name: str, metric: str, mode: str) -> dict[str, Any]:
    """The best architecture by the search's first objective (as ``lineage best`` ranks
    it), its validation and test accuracy, and every test-scored architecture."""
    from morphsearch.lineage import LineageStore

    with LineageStore(db) as store:
        summary = store.summary(name)
        tested = {r.arch_id: r.value for r in store.best(name, "test_accuracy", "max", k=1000)}
        val = {r.arch_id: r for r in store.best(name, "val_accuracy", "max", k=1000)}
        best = store.best(name, metric, mode, k=1)[0]  # type: ignore[arg-type]
        front = [{"arch_id": r.arch_id, "params": r.params, "val": r.value,
                  "test": tested.get(r.arch_id)} for r in val.values() if r.arch_id in tested]
    return {"trials": summary.n_trials, "best_arch": best.arch_id, "best_params": best.params,
            "best_val": val[best.arch_id].value, "best_test": tested.get(best.arch_id),
            "scored": sorted(front, key=lambda r: r["params"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("baselines", "search"), required=True)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="cnn-baselines-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.part == "baselines":
        rows = baselines(args.seeds)
        (out / "baselines.json").write_text(json.dumps(rows, indent=1))
        return
    if args.config is None:
        parser.error("--part search needs --config")
    for seed in args.seeds:
        result = run_search(args.config, seed, out)
        (out / f"{args.config.stem}-s{seed}.json").write_text(json.dumps(result, indent=1))
        small = [r for r in result["scored"] if r["test"] is not None]
        print(f"| {args.config.name} | {seed} | {result['trials']} | {result['wall_s'] / 60:.1f} min | "
              f"{result['best_params']:,} | {100 * result['best_val']:.1f} | "
              f"{100 * (result['best_test'] or float('nan')):.1f} |", flush=True)
        for r in small:
            print(f"|   front/top | | | | {r['params']:,} | {100 * r['val']:.1f} | "
                  f"{100 * r['test']:.1f} |", flush=True)
    print(f"results in {out}")


if __name__ == "__main__":
    main()
