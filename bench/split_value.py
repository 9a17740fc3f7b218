"""Value of splitting steepest descent on the GradMax teacher-student task.

The protocol of ``bench/gradmax_teacher_student.py`` (teacher 20:10:10 ReLU, 1000 Gaussian
inputs, full-batch SGD lr 0.1 for 1500 steps, students 20:5:10 grown by one hidden neuron
every 200 steps to 20:10:10), with growth by ``split.steepest`` (plain, and signed) beside
``widen.gradmax``, ``widen.split`` and ``widen.random``. Per seed every method shares the
teacher, the data and the student's initial weights (paired): the table gives the final
training loss and, per pair, how often ``split.steepest`` ends lower than each other method.
``split.steepest`` splits the neuron whose best split predicts the lowest loss, with the
softplus surrogate (beta 3) for ReLU's second derivative, at step ``eps`` (weight units).

    .venv/bin/python bench/split_value.py --seeds 10 [--eps 0.1]

The MNIST-1D CNN comparison waits for ``conv1d`` in the op table (helper "ops").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gradmax_teacher_student as ts  # the sibling benchmark's protocol

from morphsearch import builders

METHODS = ("Random", "Split", "GradMax", "Steepest", "Steepest-signed")


def run_seed(seed: int, eps: float) -> dict[str, float]:
    ts.GROWTH.update({
        "Steepest": ("split.steepest", {"eps": eps}),
        "Steepest-signed": ("split.steepest", {"eps": eps, "signed": True}),
    })
    batch = ts.data(seed)
    small = builders.mlp([20, 5, 10], seed=seed + 1)
    return {m: ts.train(small, batch, m, seed) for m in METHODS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--eps", type=float, default=0.1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    results = [run_seed(seed, args.eps) for seed in range(args.seeds)]
    print(f"{args.seeds} seeds, eps {args.eps}, in {time.perf_counter() - start:.0f} s "
          "(1 thread)\n")
    print("| method | final train loss (mean ± std) | split.steepest lower in |")
    print("| --- | --- | --- |")
    for m in METHODS:
        vals = [r[m] for r in results]
        plain = sum(r["Steepest"] < r[m] for r in results)
        signed = sum(r["Steepest-signed"] < r[m] for r in results)
        print(f"| {m} | {statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f} "
              f"| plain {plain}/{len(results)}, signed {signed}/{len(results)} |")


if __name__ == "__main__":
    main()
