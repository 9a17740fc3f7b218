"""The conv builders on signals and images, and the shipped MNIST-1D CNN graphs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from morphsearch import builders
from morphsearch.arch import load
from morphsearch.errors import InvalidArchitecture

GRAPHS = Path(__file__).parents[2] / "graphs"


def _paper_reference(arch) -> nn.Sequential:
    """Greydanus & Kobak's MNIST-1D CNN written by hand, given the architecture's weights."""
    convs = [nn.Conv1d(1, 25, 5, 2, 1), nn.Conv1d(25, 25, 3, 2, 1), nn.Conv1d(25, 25, 3, 2, 1)]
    fc = nn.Linear(125, 10)
    with torch.no_grad():
        for layer, node in [*zip(convs, ("conv1", "conv2", "conv3")), (fc, "fc")]:
            layer.weight.copy_(arch.weights[node]["weight"])
            layer.bias.copy_(arch.weights[node]["bias"])
    relu = nn.ReLU
    return nn.Sequential(convs[0], relu(), convs[1], relu(), convs[2], relu(), nn.Flatten(), fc)


def test_paper_cnn_is_the_papers_5210_parameter_net() -> None:
    arch = builders.paper_cnn()
    assert arch.num_params == 5210
    assert arch.shape("conv3") == (25, 5)
    reference = _paper_reference(arch)
    assert sum(p.numel() for p in reference.parameters()) == 5210
    x = torch.randn(6, 1, 40)
    torch.testing.assert_close(arch.to_module()(x), reference(x), rtol=0, atol=1e-6)


def test_paper_cnn_widths_and_errors() -> None:
    # 1*8*5+8 + 2*(8*8*3+8) + 8*5*10+10
    assert builders.paper_cnn(channels=8).num_params == 858
    assert builders.paper_cnn((1, 28, 28), channels=(4, 8, 8)).spec("conv1").op == "conv2d"
    with pytest.raises(InvalidArchitecture, match="one width per kernel size"):
        builders.paper_cnn(channels=(4, 8))
    with pytest.raises(InvalidArchitecture, match=r"paper_cnn needs a \(channels, length\)"):
        builders.paper_cnn((40,))


def test_cnn_builds_conv1d_and_1d_pooling_on_signals() -> None:
    arch = builders.cnn((2, 40), channels=(4, 8), hidden=(16,), num_classes=3)
    assert {arch.op(n) for n in ("conv1", "conv2")} == {"conv1d"}
    assert arch.shape("pool") == (8, 20)
    assert arch.to_module()(torch.randn(5, 2, 40)).shape == (5, 3)
    assert builders.cnn().spec("conv1").op == "conv2d"  # images as before


@pytest.mark.parametrize(
    ("name", "params"), [("mnist1d-cnn-tiny", 858), ("mnist1d-paper-cnn", 5210)]
)
def test_shipped_mnist1d_cnn_graphs(name: str, params: int) -> None:
    arch = load(GRAPHS / f"{name}.json")
    assert arch.input_shape == (1, 40) and arch.output_shape == (10,)
    assert arch.num_params == params <= (1000 if "tiny" in name else 5210)
    assert {arch.op(n) for n in arch.nodes if arch.op(n).startswith("conv")} == {"conv1d"}
    assert arch.structure_hash == builders.paper_cnn(
        channels=8 if "tiny" in name else 25, name=name
    ).structure_hash


def test_shipped_full_resolution_mnist1d_seed() -> None:
    """configs/mnist1d.yaml's seed: two stride-1 conv1d keep all 40 positions,
    one 2x max pool halves them once before the linear layer."""
    arch = load(GRAPHS / "mnist1d-cnn-fullres.json")
    assert arch.input_shape == (1, 40) and arch.output_shape == (10,)
    assert arch.shape("conv1") == arch.shape("conv2") == (8, 40)
    assert arch.shape("pool") == (8, 20)
    # 8*(1*5) + 8 + 8*(8*3) + 8 + 10*(8*20) + 10
    assert arch.num_params == 48 + 200 + 1610 == 1858
    assert arch.to_module()(torch.randn(3, 1, 40)).shape == (3, 10)


def test_resnet_on_a_signal_uses_conv1d_and_keeps_its_length() -> None:
    arch = builders.resnet((2, 10), width=3, blocks=1, num_classes=4)
    assert arch.op("b1_conv2") == "conv1d" and arch.shape("b1_add") == (3, 10)
    assert arch.shape("gap") == (3,)
    assert arch.to_module()(torch.randn(5, 2, 10)).shape == (5, 4)
    assert builders.resnet().op("stem") == "conv2d"
    with pytest.raises(InvalidArchitecture, match="resnet needs a"):
        builders.resnet((12,))
