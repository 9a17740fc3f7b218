"""Training-step overhead of a compiled architecture vs a hand-written nn.Sequential.

Target (issue 2): <= 1.15x per training step for the digits MLP and a small CNN.

    python bench/compile_overhead.py [--steps 100] [--repeats 41]

Both models hold the same weights and see the same batches; steps are timed in short
alternating blocks so machine noise hits both alike; the median of the per-block ratios
is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from sklearn.datasets import load_digits
from torch import nn

from morphsearch import builders


def sequential_twin(arch) -> nn.Module:  # type: ignore[no-untyped-def]
    """The same network written by hand, loaded with the same weights."""
    layers: list[nn.Module] = []
    for node in arch.nodes:
        spec, ins = arch.spec(node), arch.inputs(node)
        shape = arch.shape(ins[0]) if ins else ()
        if spec.op == "linear":
            layers.append(nn.Linear(shape[0], spec["out_features"]))
        elif spec.op == "conv2d":
            layers.append(nn.Conv2d(shape[0], spec["out_channels"], spec["kernel_size"],
                                    padding=spec["padding"]))
        elif spec.op == "relu":
            layers.append(nn.ReLU())
        elif spec.op == "maxpool":
            layers.append(nn.MaxPool2d(spec["kernel_size"]))
        elif spec.op == "flatten":
            layers.append(nn.Flatten())
        else:
            continue
        if arch.weights.get(node):
            layers[-1].load_state_dict(dict(arch.weights[node]))
    return nn.Sequential(*layers)


def time_steps(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor, steps: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    n = xs.shape[0]
    start = time.perf_counter()
    for i in range(steps):
        j = (i * 64) % (n - 64)
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xs[j : j + 64]), ys[j : j + 64]).backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def measure(name: str, arch, xs, ys, steps: int, repeats: int) -> dict:  # type: ignore[no-untyped-def]
    compiled, hand = arch.to_module(), sequential_twin(arch)
    with torch.no_grad():
        assert torch.allclose(compiled(xs[:8]), hand(xs[:8]), atol=1e-6)
    time_steps(compiled, xs, ys, 50)
    time_steps(hand, xs, ys, 50)  # warm-up
    ours, base, ratios = [], [], []
    for _ in range(repeats):  # short alternating blocks: noise hits both alike
        b = time_steps(hand, xs, ys, steps)
        o = time_steps(compiled, xs, ys, steps)
        base.append(b)
        ours.append(o)
        ratios.append(o / b)
    return {
        "model": name,
        "sequential_us": statistics.median(base) * 1e6,
        "compiled_us": statistics.median(ours) * 1e6,
        "ratio": statistics.median(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=41)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    rows = [
        measure("digits MLP 64:64:10", builders.mlp([64, 64, 10]), x, y, args.steps, args.repeats),
        measure("digits MLP 64:8:10", builders.mlp([64, 8, 10]), x, y, args.steps, args.repeats),
        measure("digits CNN (8,16 ch)", builders.cnn(), x.view(-1, 1, 8, 8), y, args.steps,
                args.repeats),
    ]
    print(f"torch {torch.__version__}, 1 thread, batch 64, SGD+momentum, "
          f"median of {args.repeats} alternating blocks of {args.steps} steps")
    print("| model | nn.Sequential µs/step | compiled µs/step | ratio |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['sequential_us']:.0f} | {r['compiled_us']:.0f} | "
              f"{r['ratio']:.3f}x |")


if __name__ == "__main__":
    main()
