"""Growth cost: each registered morphism's ``apply`` vs one training step on the same batch.

Workloads: the teacher-student MLP (20:5:10, MSE, batch 1000), the digits MLP (64:8:10,
the digits training split as one batch) and the digits CNN (``builders.cnn()``). For
each operator, at its first site: ``apply`` (with its probe-batch preservation check)
and ``transform`` alone (no check), each as a ratio to one training step (forward,
backward, SGD step on the compiled module) timed just before it: the median of those
paired ratios. GradMax is also run with GroMo, a peer library, on the same MLPs
(growing the same hidden layer by the same k).

A second table (``--wide``) times the splitting eigenpairs of a 1,024-unit layer
(``splitting_eigenpairs``: the forward/backward pass for the curvature weights, then the
smallest eigenpair of each of the 1,024 splitting matrices and its vector in the layer's
inputs, which is what a plain split reads ("smallest end"), or with the largest
eigenpair too, which a signed split reads) against a training step of that network:
MLP 64:1024:1024:10 on the digits training split as one batch, and on a batch of 128
(a search's training batch and the probe its morphisms are applied on), at ``fc1`` (65
weights per neuron with the bias: exact ``eigh`` or Lanczos) and ``fc2`` (1,025:
Lanczos; with 128 rows, in the rows' span), with the largest relative error of
``lambda_min`` against the exact eigendecomposition (float64, untimed) where that fits
in memory (fc2: its first 64 neurons).

Run: ``.venv/bin/python bench/growth_cost.py [--repeats 15] [--wide]`` (one thread,
medians).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from morphsearch import builders, morphisms
from morphsearch.arch import Architecture
from morphsearch.data import load_dataset
from morphsearch.losses import task_loss

Batch = tuple[torch.Tensor, torch.Tensor]


def paired(fn: Callable[[], Any], step: Callable[[], Any], repeats: int,
           setup: Callable[[], Any] | None = None) -> tuple[float, float]:
    """(median seconds of ``fn``, median ratio of ``fn``'s time to ``step``'s).

    Each repeat times one training step and then ``fn`` (``fn(setup())``, the setup and
    a step after it untimed), and the ratio is taken per pair: the machine is shared and
    its speed drifts, which moves a ratio of two medians taken seconds apart by ±30% but
    a ratio of neighbours much less. Both also run in each other's cache footprint, as
    growth inside a training loop does. The first few pairs are a warm-up.
    """
    times, ratios = [], []
    for i in range(repeats + 3):
        arg = None
        if setup:  # then a step, untimed: the timed one does not pay for the setup's misses
            arg = setup()
            step()
        t0 = time.perf_counter()
        step()
        t1 = time.perf_counter()
        fn(arg) if setup else fn()
        t2 = time.perf_counter()
        if i >= 3:
            times.append(t2 - t1)
            ratios.append((t2 - t1) / (t1 - t0))
    return statistics.median(times), statistics.median(ratios)


def train_step(arch: Architecture, batch: Batch) -> Callable[[], None]:
    """One SGD training step of the compiled module on ``batch`` (the unit of cost)."""
    module = arch.to_module().train()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01)

    def step() -> None:
        optimizer.zero_grad()
        task_loss(module(batch[0]), batch[1]).backward()
        optimizer.step()

    return step


def step_seconds(step: Callable[[], None], repeats: int) -> float:
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def morphism_costs(name: str, arch: Architecture, site: str, batch: Batch,
                   step: Callable[[], None], repeats: int) -> list[tuple[float, float]]:
    """[(seconds, x step)] of ``apply`` with its preservation check, then of
    ``transform`` alone (no check)."""
    morphism = morphisms.get(name)
    params = morphism.param_defaults()

    def with_check() -> None:
        morphisms.apply(name, arch, site, batch=batch, seed=0)

    def without_check() -> None:
        morphism.transform(arch, site, batch=batch, generator=torch.Generator().manual_seed(0),
                           **params)

    return [paired(with_check, step, repeats), paired(without_check, step, repeats)]


def gromo_gradmax_cost(sizes: tuple[int, int, int], batch: Batch, k: int,
                       step: Callable[[], None], repeats: int) -> tuple[float, float] | str:
    """GroMo's GradMax growth of the hidden layer (statistics pass + solve + apply)."""
    try:
        from gromo.containers.growing_mlp import GrowingMLP
    except ImportError as exc:
        return f"not installed ({exc})"

    def fresh_model() -> Any:  # growth mutates the model: a new one each time, untimed
        torch.manual_seed(0)
        return GrowingMLP(sizes[0], sizes[2], sizes[1], number_hidden_layers=1,
                          activation=nn.ReLU())

    model = fresh_model()
    _gromo_grow(model, batch, k)
    grown = model.layers[0].out_features
    if grown != sizes[1] + k:  # make sure the timed call really grows the layer
        return f"GroMo grew the hidden layer to {grown}, expected {sizes[1] + k}"
    return paired(lambda model: _gromo_grow(model, batch, k), step, repeats, fresh_model)


def _gromo_grow(model: Any, batch: Batch, k: int) -> None:
    model.init_computation()
    task_loss(model(batch[0]), batch[1]).backward()
    model.update_computation()
    # GroMo's documented GradMax setting (compute_optimal_updates docstring).
    model.compute_optimal_updates(
        maximum_added_neurons=k, compute_delta=False, use_covariance=False,
        alpha_zero=True, omega_zero=False, use_projection=False, ignore_singular_values=True,
    )
    model.reset_computation()
    model.select_best_update()
    model.set_scaling_factor(1.0)
    model.apply_change()


def workloads() -> dict[str, tuple[Architecture, Batch]]:
    ts = load_dataset("teacher_student")
    digits = load_dataset("digits", image=False)  # 64 features for the MLP
    images = load_dataset("digits", image=True)
    return {
        "teacher-student MLP 20:5:10": (builders.mlp([20, 5, 10]), (ts.x_train, ts.y_train)),
        "digits MLP 64:8:10": (builders.mlp([64, 8, 10]), (digits.x_train, digits.y_train)),
        "digits CNN (builders.cnn())": (builders.cnn(), (images.x_train, images.y_train)),
    }


def wide_split_costs(repeats: int) -> None:
    """The ``--wide`` table (see the module doc)."""
    from morphsearch.morphisms._split_linalg import Curvature, extreme_eigenpairs
    from morphsearch.morphisms.splitting import splitting_curvature, splitting_eigenpairs

    digits = load_dataset("digits", image=False)  # 64 features for the MLP
    arch = builders.mlp([64, 1024, 1024, 10])
    for rows in (len(digits.x_train), 128):  # the whole split; a search's batch and probe
        batch = (digits.x_train[:rows], digits.y_train[:rows])
        step = train_step(arch, batch)
        seconds = step_seconds(step, 3)
        print(f"| MLP 64:1024:1024:10 (batch {rows}) | training step | {seconds * 1e3:.0f} "
              "| 1.00 | |")
        wide = (batch[0].double(), batch[1])
        exact = {}  # float64 references: every fc1 neuron, fc2's first 64 (4 GB for all)
        for site, units in (("fc1", 1024), ("fc2", 64 if rows < 1024 else 0)):
            if units:
                curv = splitting_curvature(arch.to(torch.float64), site, wide)
                exact[site] = extreme_eigenpairs(Curvature(curv.x, curv.c[:, :units]),
                                                 method="exact").min_values
        runs = [("fc1", "exact", 0, "both"), ("fc1", "auto", 0, "min"),
                ("fc1", "auto", 0, "both"), ("fc1", "fast", 20, "both")]
        runs += ([("fc2", "fast", 10, "both")] if rows > 1024
                 else [("fc2", "auto", 0, "min"), ("fc2", "auto", 0, "both")])
        for site, method, iters, ends in runs:
            found: list[torch.Tensor] = []

            def run(site: str = site, method: str = method, iters: int = iters,
                    ends: str = ends, found: list[torch.Tensor] = found,
                    batch: Batch = batch) -> None:
                options: dict[str, Any] = {"iters": iters} if iters else {}  # else the default
                pairs = splitting_eigenpairs(arch, site, batch, method=method, ends=ends,
                                             **options)
                pairs.min_vectors  # noqa: B018  # lifted to the layer's inputs: timed too
                found.append(pairs.min_values)

            took, ratio = paired(run, step, repeats)
            error = ""
            if site in exact:
                ref = exact[site]
                error = f"{float(((found[-1][:len(ref)].double() - ref).abs() / ref.abs()).max()):.1e}"
            label = method if not iters else f"Lanczos, {iters} steps"
            label += ", smallest end" if ends == "min" else ""
            print(f"| | {site}: {label} | {took * 1e3:.0f} | {ratio:.2f} | {error} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15,
                        help="pairs per measurement at least (more for cheap steps: ~0.5 s each)")
    parser.add_argument("--wide", action="store_true",
                        help="only the splitting eigenpairs of a 1,024-unit layer")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.wide:
        print("| workload | eigenpairs of | ms | x step | max rel. error of lambda_min |")
        print("| --- | --- | ---: | ---: | ---: |")
        wide_split_costs(max(3, args.repeats // 5))
        return
    print("| workload | operator | site | apply (ms) | x step | no check (ms) | x step |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for label, (arch, batch) in workloads().items():
        step = train_step(arch, batch)
        seconds = step_seconds(step, args.repeats)
        repeats = max(args.repeats, min(400, int(0.5 / seconds)))
        print(f"| {label} (batch {len(batch[0])}) | training step | | {seconds * 1e3:.2f} "
              f"| 1.00 | | |")
        for name in morphisms.list_morphisms():
            sites = morphisms.sites(name, arch)
            if not sites:
                print(f"| | {name} | none | n/a | | | |")
                continue
            (full, full_x), (bare, bare_x) = morphism_costs(name, arch, sites[0], batch, step,
                                                            repeats)
            print(f"| | {name} | {sites[0]} | {full * 1e3:.2f} | {full_x:.2f} "
                  f"| {bare * 1e3:.2f} | {bare_x:.2f} |")
        if len(arch.input_shape) == 1:
            hidden = arch.shape("fc1")[0]
            sizes = (arch.input_shape[0], hidden, arch.output_shape[0])
            k = morphisms.get("widen.gradmax").param_defaults().get("k", 1)
            gromo = gromo_gradmax_cost(sizes, batch, k, step, repeats)
            if isinstance(gromo, str):
                print(f"| | GroMo GradMax | hidden | {gromo} | | | |")
            else:
                print(f"| | GroMo GradMax (k={k}) | hidden | {gromo[0] * 1e3:.2f} "
                      f"| {gromo[1]:.2f} | | |")


if __name__ == "__main__":
    main()
