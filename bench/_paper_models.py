"""The hand-written baselines a user would otherwise run, trained with the paper's recipe.

MNIST-1D (Greydanus & Kobak, "Scaling Down Deep Learning with MNIST-1D", 2024): the
paper's MLP (Linear 40→100, ReLU, a residual Linear 100→100 + ReLU, Linear 100→10;
15,210 parameters) and CNN (three Conv1d of 25 channels, kernels 5/3/3, stride 2,
padding 1, ReLU after each, Linear 125→10; 5,210 parameters), Adam lr 1e-2, batch 100,
6000 steps, final weights. Digits (1x8x8) has no paper model; the hand-written CNN is the
textbook small one (two 3x3 convolutions of 32 channels with padding 1, ReLU, 2x2 max
pooling, Linear 512→10), trained with the same recipe.

Written in plain PyTorch on purpose: these are what a person writes by hand, not
morphsearch graphs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PaperMLP(nn.Module):
    def __init__(self, inputs: int = 40, hidden: int = 100, outputs: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(inputs, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(x.flatten(1)))
        h = h + F.relu(self.fc2(h))
        return self.fc3(h)


def paper_cnn(channels: int = 25, length: int = 40, outputs: int = 10) -> nn.Module:
    layers: list[nn.Module] = []
    c_in = 1
    for k in (5, 3, 3):
        layers += [nn.Conv1d(c_in, channels, k, stride=2, padding=1), nn.ReLU()]
        c_in = channels
    body = nn.Sequential(*layers, nn.Flatten())
    width = body(torch.zeros(1, 1, length)).shape[1]
    return nn.Sequential(body, nn.Linear(width, outputs))


def digits_cnn(channels: int = 32, outputs: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(channels * 16, outputs),
    )


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_paper_recipe(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int,
    steps: int = 6000, lr: float = 1e-2, batch_size: int = 100,
) -> nn.Module:
    """Adam at a constant lr on random mini-batches (with replacement), as the paper."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    hits = sum(
        int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
        for i in range(0, len(x), batch)
    )
    return hits / len(x)


def paper_flops(model: nn.Module, input_shape: tuple[int, ...], steps: int, batch: int) -> float:
    """Training FLOPs of the recipe: 3x a forward's multiply-adds (x2) per sample."""
    macs = 0

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(mod, nn.Linear):
            macs += mod.in_features * mod.out_features
        elif isinstance(mod, nn.Conv1d | nn.Conv2d):
            macs += math.prod(mod.weight.shape[1:]) * out[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for h in handles:
        h.remove()
    return 3 * 2 * macs * steps * batch
