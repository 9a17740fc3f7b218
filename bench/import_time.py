"""Time ``morphsearch.from_module`` on a ResNet-18-shaped network (issue 16: <= 2 s).

    python bench/import_time.py [--width 64] [--repeats 5]

The network is ResNet-18's topology at full width (64-512 channels, 11.2 M parameters),
written as plain PyTorch (``tests/arch/fx_models.py``), imported with a 2x3x32x32
example batch. The first call in the process is reported apart from the median of the
following ones: it also pays for loading torch.fx and compiling the generated forward.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.arch.fx_models

from morphsearch import from_module
from tests.arch.fx_models import ResNet18


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    module = ResNet18(width=args.width)
    example = torch.randn(2, 3, 32, 32)
    times = []
    for _ in range(1 + args.repeats):
        start = time.perf_counter()
        arch = from_module(module, example)
        times.append(time.perf_counter() - start)
    print(f"ResNet-18 shape, width {args.width}: {len(arch)} nodes, {arch.num_params:,} "
          f"params, {arch.flops / 1e6:.0f} MFLOPs per sample")
    print(f"first import {times[0]:.2f} s; then median {statistics.median(times[1:]):.2f} s "
          f"(min {min(times[1:]):.2f}, max {max(times[1:]):.2f}) over {args.repeats}")


if __name__ == "__main__":
    main()
