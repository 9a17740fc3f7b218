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

``--task mnist1d-cnn``: the MNIST-1D paper CNN (conv1d 5/3/3, stride 2) started at 4
channels per conv; ``conv2`` grows by 2 channels every 150 steps (4 growths, to 12); Adam
lr 1e-2 (a fresh Adam after each growth), batch 100, 900 steps; the morphisms see the
current minibatch. Final training loss (whole training split) and test accuracy.

    .venv/bin/python bench/split_value.py --task mnist1d-cnn --seeds 10 --eps 0.3
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


def train_cnn(method: str, seed: int, eps: float, data: object, steps: int = 900,
              every: int = 150, growths: int = 4) -> tuple[float, float]:
    """(final train loss, test accuracy) of the MNIST-1D CNN grown by ``method``."""
    from morphsearch import morphisms
    from morphsearch.morphisms._surgery import batch_loss

    x, y = data.split("train")  # type: ignore[attr-defined]
    xt, yt = data.split("test")  # type: ignore[attr-defined]
    arch = builders.paper_cnn((1, 40), channels=4, seed=seed)
    grow = {**ts.GROWTH, "Steepest": ("split.steepest", {"eps": eps}),
            "Steepest-signed": ("split.steepest", {"eps": eps, "signed": True})}
    g = torch.Generator().manual_seed(seed)
    module = arch.to_module().train()
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    for step in range(steps):
        idx = torch.randint(0, len(x), (100,), generator=g)
        batch = (x[idx], y[idx])
        if 0 < step <= every * growths and step % every == 0:
            arch = arch.with_weights_from(module)
            name, params = grow[method]
            arch = morphisms.apply(name, arch, "conv2", batch=batch, seed=seed * 100 + step,
                                   k=2, check=False, **params).child
            module = arch.to_module().train()
            opt = torch.optim.Adam(module.parameters(), lr=1e-2)
        opt.zero_grad(set_to_none=True)
        batch_loss(module(batch[0]), batch[1]).backward()
        opt.step()
    module.eval()
    with torch.no_grad():
        accuracy = float((module(xt).argmax(1) == yt).float().mean())
        return float(batch_loss(module(x), y)), accuracy


def main_cnn(seeds: int, eps: float) -> None:
    from morphsearch.data import load_dataset

    data = load_dataset("mnist1d")
    start = time.perf_counter()
    results = [{m: train_cnn(m, seed, eps, data) for m in METHODS} for seed in range(seeds)]
    print(f"MNIST-1D CNN, {seeds} seeds, eps {eps}, in {time.perf_counter() - start:.0f} s\n")
    print("| method | final train loss | test accuracy | split.steepest lower loss in |")
    print("| --- | --- | --- | --- |")
    for m in METHODS:
        loss = [r[m][0] for r in results]
        acc = [r[m][1] for r in results]
        plain = sum(r["Steepest"][0] < r[m][0] for r in results)
        signed = sum(r["Steepest-signed"][0] < r[m][0] for r in results)
        print(f"| {m} | {statistics.mean(loss):.4f} ± {statistics.stdev(loss):.4f} "
              f"| {statistics.mean(acc):.3f} ± {statistics.stdev(acc):.3f} "
              f"| plain {plain}/{seeds}, signed {signed}/{seeds} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--task", choices=("teacher-student", "mnist1d-cnn"),
                        default="teacher-student")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.task == "mnist1d-cnn":
        main_cnn(args.seeds, args.eps)
        return
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
