"""Small linear networks and data shared by the growth tests."""

from __future__ import annotations

import torch

from morphsearch.arch import Architecture
from morphsearch.builders import GraphBuilder


def linear_net(d_in: int, widths: list[int], d_out: int, *, scale: float = 1.0,
               seed: int = 0) -> Architecture:
    """x -> linear -> ... -> linear with no activation (a deep linear network), no biases."""
    b = GraphBuilder((d_in,))
    h = b.input
    for i, w in enumerate([*widths, d_out]):
        h = b.add("linear", h, out_features=w, bias=False, name=f"fc{i + 1}")
    arch = b.build(h, seed=seed)
    weights = arch.weights_copy()
    for params in weights.values():
        params["weight"] = params["weight"] * scale
    return arch.with_weights(weights)


def dominant_directions(n: int, scales: list[float], seed: int = 0) -> torch.Tensor:
    """n samples in len(scales) dims with per-direction std ``scales`` in a random basis."""
    g = torch.Generator().manual_seed(seed)
    d = len(scales)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    return (torch.randn(n, d, generator=g) * torch.tensor(scales)) @ q.T
