"""A search sharing one device among 4 trials, in bf16, against a plain PyTorch loop.

Four trials at once with ``resources.gpus: 0.25`` (on a machine with CUDA; on a CPU-only
machine the same search runs on the CPU with ``gpus: 0``), ``budget.precision: bf16``,
budgets in steps. Then the same seed network trained by a plain PyTorch loop on the same
device, in bf16, for the same steps and batch size. Throughput is training samples per
second: the search's over its whole wall time (4 trials at once, Ray and lineage
included) and over the trials' own training time, against the plain loop's.

    .venv/bin/python bench/gpu_check.py            # under 2 minutes on 2 CPU cores
    .venv/bin/python bench/gpu_check.py --steps 2000 --hidden 1024 1024 --batch-size 256
"""

from __future__ import annotations

import argparse
import itertools
import sqlite3
import tempfile
import time
from pathlib import Path

import torch


def _plain_loop(args: argparse.Namespace, device: torch.device) -> float:
    """Samples per second of a plain bf16 PyTorch loop on the seed MLP (no morphsearch)."""
    from morphsearch.data import load_dataset

    data = load_dataset("digits", seed=0, image=False)
    x, y = (t.to(device) for t in data.split("train"))
    layers: list[torch.nn.Module] = []
    widths = [x.shape[1], *args.hidden]
    for a, b in itertools.pairwise(widths):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(widths[-1], 10)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator(device="cpu").manual_seed(0)

    def step() -> None:
        idx = torch.randint(len(x), (args.batch_size,), generator=generator).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(10):  # warm-up
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch_size / (time.perf_counter() - start)


def _search(args: argparse.Namespace, gpus: float, folder: Path) -> tuple[float, float, int]:
    """(wall s, sum of the trials' own training s, trials) of a 4-at-once bf16 search."""
    from morphsearch.search.config import SearchConfig
    from morphsearch.search.runner import run_search

    config = SearchConfig.model_validate({
        "name": "gpucheck", "seed": 0,
        "seed_graph": {"builder": "mlp", "hidden": args.hidden},
        "dataset": {"name": "digits"},
        "budget": {"trials": args.trials, "max_concurrent": 4, "steps_per_trial": args.steps,
                   "child_steps": args.steps, "eval_every_steps": max(1, args.steps // 4),
                   "batch_size": args.batch_size, "precision": "bf16", "patience": None},
        "morphisms": {"widen.random": {"k": [1, 8]}, "deepen.identity": {}},
        "selection": {"test_top": 1},
        "resources": {"cpus": 1, "gpus": gpus},
        "database": f"sqlite:///{folder}/lineage.db", "storage": str(folder / "runs"),
    })  # fmt: skip
    start = time.perf_counter()
    run_search(config)
    wall = time.perf_counter() - start
    with sqlite3.connect(folder / "lineage.db") as con:
        rows = con.execute("select t.trial_id, sum(m.value) from metrics m join trials t "
                           "on t.id = m.trial_id where m.name = 'train_time_s' "
                           "group by t.trial_id").fetchall()  # fmt: skip
        errors = con.execute("select count(*) from trials where status = 'ERROR'").fetchone()
    if errors[0]:
        raise SystemExit(f"{errors[0]} trials failed; see {folder}")
    return wall, sum(v for _, v in rows), len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
    args = parser.parse_args()
    import ray

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    gpus = 0.25 if cuda else 0.0
    torch.set_num_threads(1)
    ray.init(num_cpus=4, num_gpus=1 if cuda else 0, include_dashboard=False,
             log_to_driver=False, configure_logging=False)  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix="ms-gpucheck-"))
    wall, own, trials = _search(args, gpus, folder)
    ray.shutdown()
    plain = _plain_loop(args, device)
    samples = trials * args.steps * args.batch_size
    name = torch.cuda.get_device_name() if cuda else "CPU (no CUDA here)"
    print(f"device: {name}; {trials} trials, 4 at once, resources.gpus {gpus:g}, bf16, "
          f"{args.steps} steps x batch {args.batch_size}, MLP 64-{'-'.join(map(str, args.hidden))}-10")
    print("| loop | samples/s | vs plain loop |\n|---|---:|---:|")
    print(f"| plain PyTorch loop, bf16, one process | {plain:,.0f} | 1.00 |")
    print(f"| search, per trial (trials' own training time) | {samples / own:,.0f} "
          f"| {samples / own / plain:.2f} |")
    print(f"| search, 4 trials at once over its wall time | {samples / wall:,.0f} "
          f"| {samples / wall / plain:.2f} |")


if __name__ == "__main__":
    main()
