"""GradMax teacher-student reproduction (Evci et al., 2022, section 4.1 and appendix D).

Teacher 20:10:10 (ReLU, weights and biases uniform in [-1, 1]); N = 1000 inputs from a
standard Gaussian; targets = teacher outputs; squared loss (mean over entries).
Students start at 20:5:10 and grow the hidden layer by one neuron every 200 steps
(steps 200..1000, 5 growths) to 20:10:10, then train on to 1500 full-batch SGD steps at
lr 0.1. Baselines train 20:5:10 and 20:10:10 from scratch. Every method of one seed
shares the teacher, the data and the student's initial weights (paired comparison).
New neurons' weights get the mean norm of the existing neurons' (``scale_mode="mean"``).

    .venv/bin/python bench/gradmax_teacher_student.py --seeds 20

Everything goes through the IR: ``builders.mlp`` graphs, compiled modules, and the
registered morphisms (``widen.random``, ``widen.split``, ``widen.gradmax``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from morphsearch import builders, morphisms
from morphsearch.arch import Architecture
from morphsearch.morphisms._surgery import batch_loss

METHODS = ("Baseline-Small", "Baseline-Big", "Random", "Split", "GradMax")
GROWTH = {"Random": ("widen.random", {}), "Split": ("widen.split", {"noise": 0.5}),
          "GradMax": ("widen.gradmax", {})}


def teacher(seed: int) -> Architecture:
    arch = builders.mlp([20, 10, 10], seed=seed)
    g = torch.Generator().manual_seed(seed)
    weights = {n: {k: torch.rand(t.shape, generator=g) * 2 - 1 for k, t in ps.items()}
               for n, ps in arch.weights.items()}
    return arch.with_weights(weights)


def data(seed: int, n: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(10_000 + seed)
    x = torch.randn(n, 20, generator=g)
    with torch.no_grad():
        return x, teacher(seed).to_module()(x)


def train(arch: Architecture, batch: tuple[torch.Tensor, torch.Tensor], method: str,
          seed: int, steps: int = 1500, every: int = 200, growths: int = 5,
          lr: float = 0.1) -> float:
    """Full-batch SGD, growing ``fc1`` by one neuron every ``every`` steps; final loss."""
    module = arch.to_module().train()
    for step in range(steps):
        if method in GROWTH and 0 < step <= every * growths and step % every == 0:
            arch = arch.with_weights_from(module)
            name, params = GROWTH[method]
            arch = morphisms.apply(name, arch, "fc1", batch=batch, seed=seed * 100 + step,
                                   k=1, **params).child
            module = arch.to_module().train()
        module.zero_grad(set_to_none=True)
        loss = batch_loss(module(batch[0]), batch[1])
        loss.backward()
        with torch.no_grad():
            for p in module.parameters():
                p -= lr * p.grad  # type: ignore[operator]
    with torch.no_grad():
        return float(batch_loss(module(batch[0]), batch[1]))


def run_seed(seed: int) -> dict[str, float]:
    batch = data(seed)
    small = builders.mlp([20, 5, 10], seed=seed + 1)
    big = builders.mlp([20, 10, 10], seed=seed + 1)
    return {m: train(big if m == "Baseline-Big" else small, batch, m, seed) for m in METHODS}


def save_graphs(root: Path) -> None:
    for name, sizes in (("teacher", [20, 10, 10]), ("student", [20, 5, 10])):
        path = root / "graphs" / f"teacher_student_{name}.json"
        text = json.dumps(builders.mlp(sizes, name=f"teacher-student-{name}").to_json(),
                          indent=2, sort_keys=True)
        path.write_text(text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--write-graphs", action="store_true",
                        help="(re)write graphs/teacher_student_*.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.write_graphs:
        save_graphs(Path(__file__).resolve().parents[1])
    start = time.perf_counter()
    results = [run_seed(seed) for seed in range(args.seeds)]
    print(f"{args.seeds} seeds in {time.perf_counter() - start:.0f} s (1 thread)\n")
    print("| method | final train loss (mean ± std) |\n| --- | --- |")
    for m in METHODS:
        vals = [r[m] for r in results]
        print(f"| {m} | {statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f} |")
    wins = sum(r["GradMax"] < r["Random"] for r in results)
    wins_split = sum(r["GradMax"] < r["Split"] for r in results)
    print(f"\nGradMax < Random in {wins}/{len(results)} paired seeds; "
          f"GradMax < Split in {wins_split}/{len(results)}")


if __name__ == "__main__":
    main()
