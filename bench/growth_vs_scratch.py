"""Digits: growing from 64:4:10 vs training the grown architecture / a 64:64:10 MLP from scratch.

Each run stops when test accuracy reaches the target; we report the training FLOPs spent
(3x forward FLOPs per sample, from ``arch.flops``) and wall time, median over seeds.

    /work/main/.venv/bin/python bench/growth_vs_scratch.py [--seeds 0 1 2] [--target 0.96]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from morphsearch import builders
from morphsearch.arch import Architecture
from morphsearch.data import load_dataset
from morphsearch.growth import GrowthConfig, LossPlateau, TrainResult, train


def _config(
    seed: int, target: float, grow: bool, morphism: str = "widen.gradmax", max_params: int = 4810
) -> GrowthConfig:
    return GrowthConfig(
        steps=5000, lr=1e-2, batch_size=64, eval_every=25, target_accuracy=target, seed=seed,
        trigger=LossPlateau(window=50, tol=0.05) if grow else None,
        morphisms=(morphism,), morphism_params={morphism: {"k": 4}},
        max_params=max_params, min_steps_between=50,
    )


def _row(result: TrainResult) -> tuple[bool, int, float, int, int]:
    reached = result.stopped_early
    return reached, result.train_flops, result.wall_time, result.arch.num_params, result.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--target", type=float, default=0.96)
    parser.add_argument("--morphism", default="widen.gradmax", help="how to grow (k=4)")
    parser.add_argument("--max-params", type=int, default=4810,
                        help="growth cap (default: the size of the 64:64:10 baseline)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows: dict[str, list[tuple[bool, int, float, int, int]]] = {}
    for seed in args.seeds:
        data = load_dataset("digits", seed=0, image=False)  # 64 features for the MLPs
        test = data.split("test")
        grown = train(builders.mlp([64, 4, 10], seed=seed), data, _config(seed, args.target, True, args.morphism, args.max_params),
                      eval_data=test)
        scratch = Architecture(grown.arch.editable_graph(), seed=seed)  # fresh initial weights
        runs = {
            "grow 64:4:10": grown,
            "final grown arch from scratch": train(scratch, data, _config(seed, args.target, False),
                                                  eval_data=test),
            "64:64:10 from scratch": train(builders.mlp([64, 64, 10], seed=seed), data,
                                           _config(seed, args.target, False), eval_data=test),
        }
        for name, result in runs.items():
            rows.setdefault(name, []).append(_row(result))
            print(f"seed {seed} {name}: {_row(result)}", flush=True)
    print(f"\n| run (target test acc {args.target}) | reached | train MFLOPs | wall s | "
          "final params | steps |")
    print("|---|---|---|---|---|---|")
    for name, rs in rows.items():
        print(f"| {name} | {sum(r[0] for r in rs)}/{len(rs)} | "
              f"{statistics.median(r[1] for r in rs) / 1e6:.0f} | "
              f"{statistics.median(r[2] for r in rs):.2f} | "
              f"{statistics.median(r[3] for r in rs):.0f} | {statistics.median(r[4] for r in rs):.0f} |")


if __name__ == "__main__":
    main()
