"""Plain PyTorch models for the importer's tests (and their factories, by name).

Each is written as a user would write it, not in the IR's terms: nested
``nn.Sequential``, a ReLU module reused, ``out += identity``, ``x.view(x.size(0), -1)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """ResNet's basic block, as torchvision writes it (one ReLU called twice)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    """ResNet-18's topology (stem, 4 stages of 2 basic blocks, pool, fc) at any width."""

    def __init__(self, width: int = 64, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages, cin = [], width
        for i, cout in enumerate([width, 2 * width, 4 * width, 8 * width]):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def vgg(channels: tuple[int, ...] = (4, 8), in_channels: int = 3, num_classes: int = 10,
        image: int = 8) -> nn.Module:
    """VGG-style: conv-bn-relu pairs, max pools, a dropout classifier."""
    layers: list[nn.Module] = []
    cin = in_channels
    for cout in channels:
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                   nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        cin = cout
    side = image // 2 ** len(channels)
    return nn.Sequential(
        nn.Sequential(*layers),
        nn.Flatten(),
        nn.Sequential(nn.Linear(cin * side * side, 16), nn.ReLU(), nn.Dropout(0.0),
                      nn.Linear(16, num_classes)),
    )


class MNIST1DConv(nn.Module):
    """The MNIST-1D paper's ConvBase, as its notebook writes it."""

    def __init__(self, channels: int = 25, output_size: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.linear = nn.Linear(channels * 5, output_size)

    def forward(self, x: torch.Tensor, verbose: bool = False) -> torch.Tensor:
        x = x.view(-1, 1, x.shape[-1])
        h1 = self.conv1(x).relu()
        h2 = self.conv2(h1).relu()
        h3 = self.conv3(h2).relu()
        h3 = h3.view(h3.shape[0], -1)
        return self.linear(h3)


class ResidualMLP(nn.Module):
    """An MLP with a residual block, layer norm, GELU, tanh and a concat."""

    def __init__(self, features: int = 12, hidden: int = 16, num_classes: int = 3) -> None:
        super().__init__()
        self.inp = nn.Linear(features, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.block = nn.Sequential(nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden),
                                   nn.GELU(), nn.Linear(hidden, hidden))
        self.side = nn.Linear(hidden, 4)
        self.side_out = nn.Linear(4, 4)  # linear -> tanh -> linear: split.steepest's site
        self.head = nn.Linear(hidden + 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm(self.inp(x)))
        h = torch.add(h, self.block(h))
        h = torch.cat([h.relu(), self.side_out(torch.tanh(self.side(h)))], dim=1)
        return self.head(h)


# ----------------------------------------------------- factories, by name


def digits_mlp() -> nn.Module:
    """An MLP for digits, whichever layout the dataset gives (64 or 1x8x8)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))


def small_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(40, 6), nn.ReLU(), nn.Linear(6, 10))


def lstm_net(features: int = 40) -> nn.Module:
    return LSTMNet(features)


class LSTMNet(nn.Module):
    def __init__(self, features: int = 40) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, 8, batch_first=True)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)  # a (batch, 40) input is one sequence to an LSTM
        return self.fc(out)


def not_a_module() -> object:
    return object()
