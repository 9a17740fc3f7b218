"""``morphsearch.from_module``: plain PyTorch models imported into the IR compute what
the models compute (eval and train mode, running statistics included), can be grown by
every morphism that applies, and survive export and ``morphsearch.load_module``."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import morphsearch
from morphsearch import morphisms
from morphsearch.arch import OPS, Architecture
from morphsearch.export import export_architecture
from tests.arch import fx_models as models
from tests.morphisms.strategies import train_mode_without_dropout
from tests.morphisms.test_contract import _check_site

TOL = 1e-5
needs_conv1d = pytest.mark.skipif(
    "conv1d" not in OPS, reason="needs the conv1d op and rank-generic pooling (helper 'ops')"
)


def _resnet18() -> nn.Module:
    return models.ResNet18(width=4)


def _mnist1d() -> nn.Module:
    return models.MNIST1DConv()


# name -> (factory, one sample's shape)
NETWORKS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "resnet18": (_resnet18, (3, 16, 16)),
    "vgg": (models.vgg, (3, 8, 8)),
    "mnist1d_conv": (_mnist1d, (1, 40)),
    "residual_mlp": (models.ResidualMLP, (12,)),
}
MARKS = {"mnist1d_conv": [needs_conv1d]}
NETWORK_PARAMS = [pytest.param(name, marks=MARKS.get(name, [])) for name in NETWORKS]


def _made(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    factory, shape = NETWORKS[name]
    torch.manual_seed(0)
    module = factory()
    _perturb_batchnorm(module)
    return module, shape


def _perturb_batchnorm(module: nn.Module) -> None:
    """Trained-looking statistics and affine terms, so eval mode is not a near-identity."""
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            c = m.num_features
            state = {"running_mean": torch.randn(c, generator=g) * 0.1,
                     "running_var": torch.rand(c, generator=g) + 0.5,
                     "weight": torch.rand(c, generator=g) + 0.5,
                     "bias": torch.randn(c, generator=g) * 0.1,
                     "num_batches_tracked": torch.tensor(3)}
            m.load_state_dict(state)


def _imported(name: str) -> tuple[nn.Module, Architecture, tuple[int, ...]]:
    module, shape = _made(name)
    arch = morphsearch.from_module(module, torch.randn(2, *shape))
    return module, arch, shape


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


def _assert_same_function(module: nn.Module, arch: Architecture, shape: tuple[int, ...]) -> None:
    """Eval mode; then one train-mode pass (batch statistics, running stats updated) on
    each, after which eval mode must agree again (the updated running stats agree)."""
    g = torch.Generator().manual_seed(2)
    x, probe = torch.randn(6, *shape, generator=g), torch.randn(5, *shape, generator=g)
    ours, theirs = arch.to_module(), copy.deepcopy(module)
    with torch.no_grad():
        assert _max_diff(ours.eval()(probe), theirs.eval()(probe)) <= TOL
        with train_mode_without_dropout(ours) as a, train_mode_without_dropout(theirs) as b:
            assert _max_diff(a(x), b(x)) <= TOL
        assert _max_diff(ours.eval()(probe), theirs.eval()(probe)) <= TOL
    tracked = _batches_tracked(theirs)
    assert _batches_tracked(ours) == tracked
    assert all(n == 4 for n in tracked)  # 3 before, one train-mode pass


def _batches_tracked(module: nn.Module) -> list[int]:
    return sorted(int(v) for k, v in module.state_dict().items()
                  if k.endswith("num_batches_tracked"))


@pytest.mark.parametrize("name", NETWORK_PARAMS)
def test_imported_network_computes_the_module(name: str) -> None:
    module, arch, shape = _imported(name)
    _assert_same_function(module, arch, shape)
    assert arch.num_params == sum(p.numel() for p in module.parameters())
    assert arch.input_shape == shape


def test_resnet18_keeps_its_topology_and_names() -> None:
    module, arch, _ = _imported("resnet18")
    assert sum(arch.op(n) == "add" for n in arch) == 8  # one per basic block
    assert sum(arch.op(n) == "conv2d" for n in arch) == 20  # 17 + 3 downsample shortcuts
    assert sum(arch.op(n) == "relu" for n in arch) == 17  # the block's ReLU, called twice
    assert arch.op("avgpool") == "global_avgpool" and "flatten" not in arch.ops
    assert arch.inputs("fc") == ("avgpool",)  # torch.flatten of the (C, 1, 1) pool: a no-op
    assert arch.spec("maxpool").attrs == {"kernel_size": 3, "stride": 2, "padding": 1}
    bn = module.get_submodule("layer2.0.downsample.1")
    torch.testing.assert_close(arch.weights["layer2_0_downsample_1"]["running_var"],
                               bn.running_var, rtol=0, atol=0)
    assert int(arch.weights["layer2_0_downsample_1"]["num_batches_tracked"]) == 3


def test_import_leaves_the_module_as_it_was() -> None:
    module, shape = _made("resnet18")
    module.train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    morphsearch.from_module(module, torch.randn(4, *shape))
    assert module.training and all(m.training for m in module.modules())
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no running-stats update


def test_sequential_layers_are_named_by_their_op() -> None:
    _, arch, _ = _imported("vgg")
    assert arch.input_node == "x" and arch.output_node == "out"
    assert arch.op("linear_2_0") == "linear"  # nn.Sequential's index 2.0: "_2_0" in fx
    assert arch.spec("dropout_2_2").attrs == {"p": 0.0}


def test_torchvision_resnet18() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    module = torchvision.models.resnet18(num_classes=10)
    _perturb_batchnorm(module)
    arch = morphsearch.from_module(module, torch.randn(2, 3, 32, 32))
    _assert_same_function(module, arch, (3, 32, 32))


# --------------------------------------------------- rectangular and 1-d layers


@needs_conv1d
def test_rectangular_kernels_and_one_dimensional_layers() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv1d(2, 4, 3, stride=2, padding=1), nn.BatchNorm1d(4), nn.ReLU(),
        nn.MaxPool1d(2), nn.AvgPool1d(3, stride=1, padding=1), nn.AdaptiveAvgPool1d(1),
        nn.Flatten(), nn.Linear(4, 3),
    )
    _perturb_batchnorm(module)
    arch = morphsearch.from_module(module, torch.randn(2, 2, 20))
    _assert_same_function(module, arch, (2, 20))
    image = nn.Sequential(nn.Conv2d(1, 3, (3, 1), stride=(2, 1), padding=(1, 0)), nn.Tanh(),
                          nn.MaxPool2d((2, 1)), nn.Flatten())
    arch = morphsearch.from_module(image, torch.randn(2, 1, 8, 5))
    assert arch.spec("conv2d_0").attrs["kernel_size"] == [3, 1]
    _assert_same_function(image, arch, (1, 8, 5))


# ------------------------------------------------- growing imported networks


@pytest.mark.parametrize("morphism", morphisms.list_morphisms())
@pytest.mark.parametrize("name", NETWORK_PARAMS)
def test_morphisms_grow_imported_networks_preserving_their_function(name: str,
                                                                     morphism: str) -> None:
    _, arch, _ = _imported(name)
    sites = morphisms.sites(morphism, arch)
    if not sites:
        pytest.skip(f"{morphism} applies nowhere in {name}")
    # the contract suite's check: a valid child, the parent unchanged, the function kept
    _check_site(morphism, arch, sites[0], full=False)


@pytest.mark.parametrize("name", NETWORK_PARAMS)
def test_morphisms_are_offered_on_imported_networks(name: str) -> None:
    _, arch, _ = _imported(name)
    offered = {m for m in morphisms.list_morphisms() if morphisms.sites(m, arch)}
    assert {"widen.random", "widen.split", "deepen.identity"} <= offered


@pytest.mark.parametrize("formats", [
    ["safetensors"], pytest.param(["safetensors", "onnx", "pt2"], marks=pytest.mark.slow)])
def test_imported_grown_exported_loads_back(tmp_path: Path, formats: list[str]) -> None:
    module, arch, shape = _imported("resnet18")
    grown = morphisms.apply("widen.split", arch, "layer1_0_conv1", seed=1).child
    grown = morphisms.apply("deepen.identity", grown, morphisms.sites("deepen.identity",
                                                                      grown)[0]).child
    result = export_architecture(grown, tmp_path / "export", formats=formats)
    assert all(error <= TOL for error in result.parity.values())  # ONNX, torch.export
    loaded = morphsearch.load_module(tmp_path / "export")
    probe = torch.randn(5, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = grown.to_module().eval()(probe)
        assert _max_diff(loaded(probe), expected) <= TOL
        assert _max_diff(expected, module.eval()(probe)) <= TOL  # grown, still the model
    assert grown.num_params > arch.num_params


# ------------------------------------------------------------ functional forms


class Forms(nn.Module):
    """One conv net per way of writing the head; each must import to the same graph."""

    def __init__(self, form: str) -> None:
        super().__init__()
        self.form = form
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.skip = nn.Identity()
        self.fc = nn.Linear(3 * 4 * 4, 2)
        self.pooled = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        h = torch.nn.functional.selu(self.skip(h)) + h
        heads = {
            "view": lambda: self.fc(h.view(h.size(0), -1)),
            "reshape": lambda: self.fc(h.reshape(-1, 48)),
            "flatten_method": lambda: self.fc(h.flatten(1)),
            "size_product": lambda: self.fc(h.view(h.shape[0], h.size(1) * h.size(2) * 4)),
            "mean": lambda: self.pooled(h.mean((2, 3))),
            "mean_keepdim": lambda: self.pooled(torch.flatten(h.mean([-2, -1], keepdim=True), 1)),
            "twice": lambda: self.fc(torch.nn.functional.gelu(h + h).flatten(1)),
        }
        return heads[self.form]()


@pytest.mark.parametrize("form", ["view", "reshape", "flatten_method", "size_product", "mean",
                                  "mean_keepdim", "twice"])
def test_functional_forms_import(form: str) -> None:
    torch.manual_seed(0)
    module = Forms(form)
    arch = morphsearch.from_module(module, torch.randn(2, 2, 4, 4))
    _assert_same_function(module, arch, (2, 4, 4))
    assert "skip" not in arch  # nn.Identity: no node
    flattens = sum(arch.op(n) == "flatten" for n in arch)
    assert flattens == (0 if form.startswith("mean") else 1)
    if form == "twice":  # x + x: one edge per pair of nodes, so the second input is a copy
        assert [arch.op(n) for n in arch.inputs("add_1")] == ["add", "identity"]
