"""A user's dataset factory for the search tests (importable on Ray workers as
``tests.search._user_data``: the repository root is on their path)."""

from __future__ import annotations

import torch


def blobs(n: int = 240, seed: int = 0) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Three Gaussian blobs in (2, 2, 3) inputs: train, val and test as (x, y) pairs."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 2, 2, 3, generator=g) * 3

    def pair(m: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(m) % 3
        return centres[y] + torch.randn(m, 2, 2, 3, generator=g), y

    return pair(n), pair(n // 4), pair(n // 4)
