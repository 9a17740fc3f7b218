"""Cost of serving batches through ``Dataset.loader`` against plain tensor indexing.

One shuffled epoch of MNIST-1D's training split (3,601 samples of (1, 40)) at batch 128,
three ways:

- ``tensor indexing``: the former trainer loop (``randperm``, then ``x[idx], y[idx]``);
- ``Dataset.loader``: a DataLoader over the in-memory split, one tensor index per batch
  (``__getitems__`` with a batch sampler of index tensors);
- ``per-sample DataLoader``: ``DataLoader(TensorDataset(x, y), shuffle=True)``, which
  indexes and collates sample by sample (what ``loader`` avoids).

Run: ``OMP_NUM_THREADS=1 python bench/data_loader.py [--epochs 50]``; the three run in
alternation, epoch by epoch; prints each one's median epoch time and the median of its
per-round ratio to tensor indexing.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable, Iterable

import torch
from torch.utils.data import DataLoader, TensorDataset

from morphsearch.data import load_dataset

BATCH = 128


def _epoch_seconds(batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]) -> float:
    gc.collect()  # garbage from the previous method's epoch must not be collected in this one
    start = time.perf_counter()
    total = 0.0
    for x, y in batches():
        total += float(x[0, 0, 0]) + float(y[0])  # touch each batch, as a trainer would
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args()
    data = load_dataset("mnist1d", seed=0)
    x, y = data.split("train")
    generator = torch.Generator().manual_seed(0)

    def indexing() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(x), generator=generator)
        return ((x[idx], y[idx]) for idx in order.split(BATCH))

    loader = data.loader("train", BATCH, shuffle=True, seed=0)
    per_sample = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True,
                            generator=torch.Generator().manual_seed(0))
    runs = {
        "tensor indexing": indexing,
        "Dataset.loader": lambda: loader,
        "per-sample DataLoader": lambda: per_sample,
    }
    # alternate the three epoch by epoch (the machine is shared and noisy); the ratio is
    # the median of per-round ratios against tensor indexing
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.epochs):
        for name, batches in runs.items():
            times[name].append(_epoch_seconds(batches))
    print(f"MNIST-1D train {tuple(x.shape)}, batch {BATCH}, {args.epochs} alternating epochs")
    base = times["tensor indexing"]
    for name, seconds in times.items():
        ratio = statistics.median(t / b for t, b in zip(seconds, base))
        print(f"{name:24s} {statistics.median(seconds) * 1e3:8.2f} ms/epoch (median)  "
              f"{ratio:5.2f}x")

if __name__ == "__main__":
    main()
