"""The widening, deepening and optimizer-transfer morphisms on conv1d and rectangular
conv2d layers, as test_widen.py checks them on square conv2d."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from morphsearch import builders, morphisms
from morphsearch.arch import Architecture
from morphsearch.builders import GraphBuilder
from morphsearch.morphisms import _gradmax_matrix as gm
from morphsearch.morphisms import transfer_optimizer, widen
from morphsearch.morphisms._surgery import widen_path
from tests.morphisms.test_widen import _BN, _BN_EPS, _FLAT, _LIN, _chain, _conv

F64 = torch.float64
OPERATORS = ["widen.random", "widen.split", "widen.gradmax"]


def _rect(dtype: torch.dtype = F64, batchnorm: bool = False) -> Architecture:
    """conv2d with rectangular kernels, strides and per-dimension padding."""
    b = GraphBuilder((2, 6, 9))
    h = b.add("conv2d", b.input, out_channels=3, kernel_size=[3, 5], stride=[1, 2],
              padding=[1, 2], name="conv1")
    if batchnorm:
        h = b.add("batchnorm", h, name="bn1")
    h = b.add("relu", h, name="relu1")
    h = b.add("conv2d", h, out_channels=4, kernel_size=[1, 3], padding=[0, 1], name="conv2")
    h = b.add("tanh", h, name="tanh2")
    h = b.add("flatten", h, name="flatten")
    return b.build(b.add("linear", h, out_features=3, name="fc"), dtype=dtype, seed=4)


def _arch(kind: str, dtype: torch.dtype = F64) -> Architecture:
    if kind == "cnn1d":
        return builders.cnn((2, 12), channels=(3, 4), hidden=(5,), num_classes=3,
                            dtype=dtype, seed=1)
    if kind == "cnn1d_bn":
        return builders.cnn((2, 12), channels=(3, 4), hidden=(5,), num_classes=3,
                            batchnorm=True, activation="tanh", dtype=dtype, seed=1)
    if kind == "paper":
        return builders.paper_cnn((1, 20), channels=3, num_classes=3, dtype=dtype, seed=1)
    return _rect(dtype, batchnorm=kind == "rect_bn")


# conv1d -> conv1d, conv1d -> pool -> flatten -> linear (with and without BN), the paper's
# stride-2 chain, rectangular conv2d -> conv2d and -> flatten -> linear
CASES = [
    ("cnn1d", "conv1"), ("cnn1d", "conv2"), ("cnn1d_bn", "conv1"), ("cnn1d_bn", "conv2"),
    ("paper", "conv1"), ("paper", "conv3"), ("rect", "conv1"), ("rect", "conv2"),
    ("rect_bn", "conv1"),
]


def _batch(arch: Architecture, n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *arch.input_shape, generator=g, dtype=arch.dtype)
    return x, torch.randint(0, arch.output_shape[0], (n,), generator=g)


def _max_diff(a: Architecture, b: Architecture, x: torch.Tensor, train: bool) -> float:
    ma, mb = a.to_module().train(train), b.to_module().train(train)
    with torch.no_grad():
        return float((ma(x) - mb(x)).abs().max())


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize(("kind", "site"), CASES)
def test_widening_preserves_function_float64(name: str, kind: str, site: str) -> None:
    parent = _arch(kind)
    before = (parent.structure_hash, parent.weights_hash)
    batch = _batch(parent)
    child = morphisms.apply(name, parent, site, batch=batch, seed=3, k=2).child
    assert child.shape(site)[0] == parent.shape(site)[0] + 2
    assert child.spec(site).op == parent.spec(site).op
    probe = _batch(parent, seed=1)[0]
    assert _max_diff(parent, child, probe, train=False) <= 1e-10
    assert _max_diff(parent, child, probe, train=True) <= 1e-10
    assert (parent.structure_hash, parent.weights_hash) == before
    again = morphisms.apply(name, parent, site, batch=batch, seed=3, k=2).child
    assert again.weights_hash == child.weights_hash


@pytest.mark.parametrize("name", OPERATORS)
def test_widening_conv1d_preserves_function_float32(name: str) -> None:
    parent = _arch("cnn1d_bn", torch.float32)
    child = morphisms.apply(name, parent, "conv1", batch=_batch(parent), k=2).child
    probe = _batch(parent, seed=1)[0]
    assert _max_diff(parent, child, probe, train=False) <= 1e-5
    assert _max_diff(parent, child, probe, train=True) <= 1e-5


_C1 = "conv1d"
# (label, architecture, site) whose gradmax matrix has a closed form
CLOSED_FORM_CASES = [
    ("paper_conv1", _arch("paper"), "conv1"),
    ("paper_conv3_flatten", _arch("paper"), "conv3"),
    ("c1_c1", _chain(_C1, [], [_conv()]), "site"),
    ("c1_stride2_pad0", _chain(_C1, [("tanh", {})], [_conv(stride=2, padding=0)]), "site"),
    ("c1_k5_stride2", _chain(_C1, [("relu", {})], [_conv(kernel_size=5, stride=2, padding=2)]),
     "site"),
    ("c1_site_stride2_k2", _chain(_C1, [("relu", {})], [_conv()], (2, 13), stride=2,
                                  kernel_size=2, padding=0), "site"),
    ("c1_k1", _chain(_C1, [("gelu", {})], [_conv(kernel_size=1, padding=0)]), "site"),
    ("c1_two_consumers", _chain(_C1, [("relu", {})], [_conv(), _conv(stride=3)]), "site"),
    ("c1_relu_bn", _chain(_C1, [("relu", {}), _BN_EPS], [_conv(stride=2)]), "site"),
    ("c1_bn_two_consumers", _chain(_C1, [_BN, ("tanh", {})], [_conv(), _conv(padding=0)]),
     "site"),
    ("c1_flatten", _chain(_C1, [("relu", {}), _FLAT], [_LIN]), "site"),
    ("c1_bn_flatten", _chain(_C1, [_BN, ("relu", {}), _FLAT], [_LIN]), "site"),
    ("c1_flatten_bn", _chain(_C1, [("relu", {}), _FLAT, _BN_EPS], [_LIN]), "site"),
    ("rect_net", _arch("rect"), "conv1"),
    ("rect_bn_net", _arch("rect_bn"), "conv1"),
    ("rect_conv_conv", _chain("conv2d", [("relu", {})],
                              [_conv(kernel_size=[3, 1], stride=[2, 1], padding=[1, 0])],
                              kernel_size=[2, 3], stride=[1, 2], padding=[1, 0]), "site"),
    ("rect_bn_two_consumers", _chain("conv2d", [_BN, ("tanh", {})],
                                     [_conv(kernel_size=[1, 3], padding=[0, 1]),
                                      _conv(kernel_size=[3, 2], stride=[1, 2], padding=0)],
                                     kernel_size=[3, 1], padding=[1, 0]), "site"),
    ("rect_flatten_bn", _chain("conv2d", [("relu", {}), _FLAT, _BN], [_LIN],
                               kernel_size=[1, 3], stride=[2, 1], padding=[0, 1]), "site"),
]


@pytest.mark.parametrize("targets", ["labels", "regression"])
@pytest.mark.parametrize(("label", "arch", "site"), CLOSED_FORM_CASES,
                         ids=[c[0] for c in CLOSED_FORM_CASES])
def test_closed_form_equals_the_auxiliary_network_path(label: str, arch: Architecture,
                                                       site: str, targets: str) -> None:
    g = torch.Generator().manual_seed(1)
    n = 10
    x = torch.randn(n, *arch.input_shape, generator=g, dtype=F64)
    y = (torch.randint(0, arch.output_shape[0], (n,), generator=g) if targets == "labels"
         else torch.randn(n, *arch.output_shape, generator=g, dtype=F64))
    wp = widen_path(arch, site)
    form = gm._closed_form(arch, wp)
    assert form is not None, label
    fast = gm._closed_form_gradmax_matrix(arch, wp, (x, y), form)
    general = gm._auxiliary_gradmax_matrix(arch, wp, (x, y))
    assert fast.shape == general.shape
    assert float(general.abs().max()) > 0.0
    torch.testing.assert_close(fast, general, rtol=1e-10,
                               atol=1e-10 * float(general.abs().max()))


def test_pooled_conv1d_takes_the_auxiliary_path() -> None:
    arch = _arch("cnn1d")  # conv2 -> relu -> maxpool -> flatten -> fc1
    assert gm._closed_form(arch, widen_path(arch, "conv2")) is None


@pytest.mark.parametrize(("kind", "site"), [("cnn1d", "conv1"), ("paper", "conv3"),
                                            ("rect", "conv1")])
def test_gradmax_gradient_norm_matches_singular_values(kind: str, site: str) -> None:
    parent = _arch(kind)
    batch = _batch(parent, n=16)
    sv = widen.gradmax_singular_values(parent, site, batch)
    c = 0.7
    child = morphisms.apply("widen.gradmax", parent, site, batch=batch, k=2, scale=c,
                            scale_mode="fixed").child
    module = child.to_module().train()
    loss = nn.functional.cross_entropy(module(batch[0]), batch[1])
    (grad,) = torch.autograd.grad(loss, module.get_submodule(f"layers.{site}").weight)
    width = parent.shape(site)[0]
    norms = grad[width:].reshape(2, -1).norm(dim=1)
    torch.testing.assert_close(norms, c * sv[:2], rtol=1e-4, atol=0.0)


@pytest.mark.parametrize("name", ["deepen.identity", "deepen.skip"])
@pytest.mark.parametrize(("kind", "site", "kernel_size"), [
    ("cnn1d", "relu1", 3), ("cnn1d_bn", "tanh2", 5), ("paper", "relu2", 1), ("rect", "relu1", 3),
])
def test_deepening_at_signal_and_rect_image_sites_is_exact(
    name: str, kind: str, site: str, kernel_size: int
) -> None:
    parent = _arch(kind)
    child = morphisms.apply(name, parent, site, seed=2, kernel_size=kernel_size).child
    new = [n for n in child.nodes if n not in parent.nodes and child.spec(n).op.startswith("conv")]
    assert new and {child.op(n) for n in new} == {parent.op(
        "conv1")}  # conv1d after a signal, conv2d after an image
    assert all(child.shape(n) == parent.shape(site) for n in new)
    probe = _batch(parent, seed=1)[0]
    assert _max_diff(parent, child, probe, train=False) <= 1e-10
    assert _max_diff(parent, child, probe, train=True) <= 1e-10


@pytest.mark.parametrize(("name", "site"), [("widen.gradmax", "conv1"), ("widen.random", "conv2"),
                                            ("deepen.identity", "relu1")])
def test_adam_state_follows_conv1d_growth(name: str, site: str) -> None:
    arch = _arch("cnn1d")
    batch = _batch(arch, n=16)
    module = arch.to_module().train()
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)

    def step(m: nn.Module, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(m(batch[0]), batch[1]).backward()
        opt.step()

    for _ in range(3):
        step(module, optimizer)
    parent = arch.with_weights_from(module)
    child = morphisms.apply(name, parent, site, batch=batch, seed=1).child
    child_module = child.to_module().train()
    child_opt = transfer_optimizer(optimizer, module, child_module, parent, child)
    step(module, optimizer)
    step(child_module, child_opt)
    grown = dict(child_module.named_parameters())
    for pname, old in module.named_parameters():
        new = grown[pname].detach()[tuple(slice(0, n) for n in old.shape)]
        # where the parent's units sit in the child, the update was the parent's own
        torch.testing.assert_close(new, old.detach(), rtol=0, atol=1e-12, msg=pname)
