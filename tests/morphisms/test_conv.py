"""conv.widen_kernel, conv.input and deepen.identity on conv nets: exactness, shapes,
parameters and errors (the contract suite covers them on random graphs too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from morphsearch import builders, morphisms
from morphsearch.arch import Architecture, NodeSpec, save
from morphsearch.arch.ops import OPS
from morphsearch.builders import GraphBuilder
from morphsearch.cli import main
from morphsearch.errors import InvalidArchitecture, MorphismNotApplicable
from morphsearch.morphisms import transfer_optimizer
from tests.morphisms.strategies import batch_for, outputs

F64 = torch.float64
needs_conv1d = pytest.mark.skipif(
    "conv1d" not in OPS, reason="conv1d is not in the op table yet (helper 'ops' adds it)"
)


def _rectangular_ok() -> bool:
    try:
        NodeSpec("conv2d", out_channels=1, kernel_size=[3, 5], padding=[1, 2])
    except InvalidArchitecture:
        return False
    return True


def _max_error(parent: Architecture, child: Architecture, n: int = 6) -> float:
    """Max |parent - child| over eval and train mode (batch statistics, no dropout)."""
    inputs, _ = batch_for(parent, n=n, seed=11)
    return max(
        float((outputs(parent, inputs, train=t) - outputs(child, inputs, train=t)).abs().max())
        for t in (False, True)
    )


def _conv_net(kernel: int, stride: int, padding: int, size: int = 7) -> Architecture:
    b = GraphBuilder((2, size, size))
    h = b.add("conv2d", b.input, out_channels=3, kernel_size=kernel, stride=stride,
              padding=padding, name="c1")
    h = b.add("tanh", b.add("batchnorm", h, name="bn1"), name="t1")
    h = b.add("relu", b.add("conv2d", h, out_channels=4, kernel_size=3, padding=1, name="c2"))
    out = b.add("linear", b.add("flatten", h, name="flat"), out_features=3, name="head")
    return b.build(out, dtype=F64, seed=3)


def _image_mlp(shape: tuple[int, ...], hidden: int = 6) -> Architecture:
    """An MLP seed on an image or sequence: x -> flatten -> fc1 -> relu -> fc2."""
    b = GraphBuilder(shape)
    h = b.add("relu", b.add("linear", b.add("flatten", b.input, name="flat"),
                            out_features=hidden, name="fc1"), name="relu1")
    return b.build(b.add("linear", h, out_features=3, name="fc2"), dtype=F64, seed=2)


def _convs(arch: Architecture) -> list[str]:
    return [n for n in arch.nodes if arch.op(n) in ("conv1d", "conv2d")]


# ------------------------------------------------------------------ widen_kernel


@pytest.mark.parametrize(("kernel", "stride", "padding", "taps"),
                         [(3, 1, 1, 1), (1, 1, 0, 1), (3, 2, 0, 1), (2, 2, 1, 2), (3, 3, 1, 1)])
def test_widen_kernel_keeps_shape_and_function_for_any_stride(
    kernel: int, stride: int, padding: int, taps: int
) -> None:
    parent = _conv_net(kernel, stride, padding)
    result = morphisms.apply("conv.widen_kernel", parent, "c1", taps=taps)
    child = result.child
    spec = child.spec("c1")
    assert (spec["kernel_size"], spec["padding"], spec["stride"]) == (
        kernel + 2 * taps, padding + taps, stride)
    assert child.shape("c1") == parent.shape("c1")
    old, new = parent.weights["c1"]["weight"], child.weights["c1"]["weight"]
    inner = (slice(None), slice(None), slice(taps, taps + kernel), slice(taps, taps + kernel))
    assert torch.equal(new[inner], old)
    assert new.abs().sum() == old.abs().sum()  # the outer taps are zero
    assert _max_error(parent, child) <= 1e-10
    assert result.record.preservation_error is not None
    assert result.record.preservation_error <= 1e-10


def test_widen_kernel_twice_stays_exact() -> None:
    parent = builders.cnn((1, 6, 6), channels=(3, 4), hidden=(5,), num_classes=3,
                          batchnorm=True, dtype=F64)
    child = parent
    for site in ("conv1", "conv1", "conv2"):
        child = morphisms.apply("conv.widen_kernel", child, site).child
    assert child.spec("conv1")["kernel_size"] == 7 and child.spec("conv2")["kernel_size"] == 5
    assert _max_error(parent, child) <= 1e-10


def test_widen_kernel_one_dim_needs_rectangular_kernels() -> None:
    parent = _conv_net(3, 1, 1)
    if _rectangular_ok():
        child = morphisms.apply("conv.widen_kernel", parent, "c1", dims=[1]).child
        assert (child.spec("c1")["kernel_size"], child.spec("c1")["padding"]) == ([3, 5], [1, 2])
        assert _max_error(parent, child) <= 1e-10
    else:
        with pytest.raises(MorphismNotApplicable,
                           match=r"node 'c1' cannot take kernel_size \[3, 5\].*dims=None"):
            morphisms.apply("conv.widen_kernel", parent, "c1", dims=[1])


@needs_conv1d
def test_widen_kernel_conv1d() -> None:
    b = GraphBuilder((2, 9))
    h = b.add("relu", b.add("conv1d", b.input, out_channels=3, kernel_size=3, stride=2,
                            name="c1"))
    parent = b.build(b.add("linear", b.add("flatten", h), out_features=2), dtype=F64)
    child = morphisms.apply("conv.widen_kernel", parent, "c1").child
    assert (child.spec("c1")["kernel_size"], child.spec("c1")["padding"]) == (5, 1)
    assert child.shape("c1") == parent.shape("c1")
    assert _max_error(parent, child) <= 1e-10


@pytest.mark.parametrize(("site", "params", "message"), [
    ("fc1", {}, r"does not apply at 'fc1' \('fc1' is linear; the kernel to widen belongs to "
                r"a conv layer\); valid sites: conv1, conv2"),
    ("conv1", {"dims": [2]}, r"dims=\[2\] must be a non-empty list of spatial dims in \[0, 2\)"),
    ("conv1", {"dims": []}, "dims=.. must be a non-empty list"),
    ("conv1", {"taps": 0}, "taps=0 must be a positive int"),
])
def test_widen_kernel_refuses_with_one_line(site: str, params: dict[str, Any],
                                            message: str) -> None:
    with pytest.raises(MorphismNotApplicable, match=message) as info:
        morphisms.apply("conv.widen_kernel", builders.cnn(), site, **params)
    assert "\n" not in str(info.value)


# -------------------------------------------------------------------- conv.input


def test_conv_input_then_split_widening_keeps_the_mlp_function() -> None:
    parent = _image_mlp((1, 8, 8))
    assert morphisms.sites("conv.input", parent) == ["flat"]
    conv = morphisms.apply("conv.input", parent).child
    assert conv.inputs("convin1_conv") == ("x",) and conv.inputs("flat") == ("convin1_conv",)
    assert (conv.spec("convin1_conv")["kernel_size"], conv.spec("convin1_conv")["padding"]) == (3, 1)
    assert "convin1_conv" in morphisms.sites("widen.split", conv)
    wide = morphisms.apply("widen.split", conv, "convin1_conv", k=4, seed=1).child
    assert wide.shape("convin1_conv") == (5, 8, 8)
    assert wide.spec("fc1") == parent.spec("fc1") and wide.weights["fc1"]["weight"].shape == (6, 320)
    assert _max_error(parent, conv) <= 1e-10
    assert _max_error(parent, wide) <= 1e-10


def test_conv_input_relu_doubles_channels_and_negates_the_dense_weights() -> None:
    parent = _image_mlp((2, 4, 4))
    child = morphisms.apply("conv.input", parent, kernel_size=1, activation="relu").child
    assert [child.op(n) for n in child.nodes if n not in parent] == ["conv2d", "relu"]
    assert child.shape("convin1_relu") == (4, 4, 4)
    w = parent.weights["fc1"]["weight"]
    assert torch.equal(child.weights["fc1"]["weight"], torch.cat([w, -w], dim=1))
    assert _max_error(parent, child) <= 1e-10


def test_a_sequence_of_exact_steps_grows_an_mlp_into_a_cnn() -> None:
    parent = _image_mlp((1, 8, 8))
    inputs, labels = batch_for(parent, n=16, seed=5)
    steps: list[tuple[str, str, dict[str, Any]]] = [
        ("conv.input", "flat", {"activation": "relu"}),
        ("widen.split", "convin1_conv", {"k": 2}),
        ("deepen.identity", "convin1_relu", {"kernel_size": 3}),
        ("widen.gradmax", "deep1_conv", {"k": 3}),
        ("conv.widen_kernel", "convin1_conv", {}),
        ("widen.random", "deep1_conv", {"k": 2}),
    ]
    arch = parent
    for name, site, params in steps:
        result = morphisms.apply(name, arch, site, batch=(inputs, labels), seed=2, **params)
        arch = result.child
        assert result.record.preservation_error is not None
        assert result.record.preservation_error <= 1e-10, name
        assert _max_error(parent, arch) <= 1e-10, name
    assert _convs(arch) == ["convin1_conv", "deep1_conv"]
    assert arch.shape("deep1_conv") == (9, 8, 8)
    assert arch.spec("convin1_conv")["kernel_size"] == 5


@needs_conv1d
def test_conv_input_on_a_sequence_inserts_conv1d() -> None:
    parent = _image_mlp((1, 40))
    child = morphisms.apply("conv.input", parent, kernel_size=5).child
    assert child.op("convin1_conv") == "conv1d"
    wide = morphisms.apply("widen.split", child, "convin1_conv", k=3).child
    assert _max_error(parent, wide) <= 1e-10


def test_conv_input_applies_ahead_of_a_cnn_head_too() -> None:
    parent = builders.cnn((1, 6, 6), channels=(3,), hidden=(4,), num_classes=3, dtype=F64)
    assert morphisms.sites("conv.input", parent) == ["flatten"]
    child = morphisms.apply("conv.input", parent, activation="relu").child
    assert child.inputs("convin1_conv") == ("pool",)
    assert _max_error(parent, child) <= 1e-10


@pytest.mark.parametrize(("site", "params", "message"), [
    ("fc1", {}, r"'fc1' is linear; the new conv goes just ahead of a flatten"),
    ("flat", {"kernel_size": 2}, "kernel_size=2 must be a positive odd int"),
    ("flat", {"activation": "tanh"}, "activation='tanh' must be None or 'relu'"),
])
def test_conv_input_refuses_with_one_line(site: str, params: dict[str, Any],
                                          message: str) -> None:
    with pytest.raises(MorphismNotApplicable, match=message) as info:
        morphisms.apply("conv.input", _image_mlp((1, 4, 4)), site, **params)
    assert "\n" not in str(info.value)


def test_conv_input_refuses_a_flatten_that_feeds_no_dense_layer() -> None:
    b = GraphBuilder((1, 3, 3))
    flat = b.add("flatten", b.input, name="flat")
    arch = b.build(b.add("tanh", flat, name="t"), dtype=F64)
    with pytest.raises(MorphismNotApplicable,
                       match="flatten 'flat' feeds tanh node 't'; it must feed linear layers"):
        morphisms.apply("conv.input", arch, "flat")


# ------------------------------------------------------------ deepen on conv nets


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_deepen_identity_conv_kernels_are_exact(kernel_size: int) -> None:
    parent = _conv_net(3, 1, 1)
    child = morphisms.apply("deepen.identity", parent, "relu1", kernel_size=kernel_size).child
    spec = child.spec("deep1_conv")
    assert (spec["kernel_size"], spec["padding"], spec["stride"]) == (
        kernel_size, kernel_size // 2, 1)
    assert _max_error(parent, child) <= 1e-10


def test_deepen_identity_conv_with_batchnorm_is_exact_in_eval_mode_only() -> None:
    parent = _conv_net(3, 1, 1)
    result = morphisms.apply("deepen.identity", parent, "relu1", batchnorm=True)
    inputs, _ = batch_for(parent, n=8, seed=4)
    eval_err = (outputs(parent, inputs, train=False)
                - outputs(result.child, inputs, train=False)).abs().max()
    assert eval_err <= 1e-10
    assert not morphisms.get("deepen.identity").preserves(result.record.params)


@needs_conv1d
def test_deepen_identity_after_a_conv1d_inserts_conv1d() -> None:
    b = GraphBuilder((2, 10))
    h = b.add("relu", b.add("conv1d", b.input, out_channels=3, kernel_size=3, padding=1),
              name="r1")
    parent = b.build(b.add("linear", b.add("flatten", h), out_features=2), dtype=F64)
    child = morphisms.apply("deepen.identity", parent, "r1", kernel_size=5).child
    assert child.op("deep1_conv") == "conv1d" and child.shape("deep1_conv") == (3, 10)
    assert _max_error(parent, child) <= 1e-10


# --------------------------------------------------------------------------- CLI


def test_graph_morphisms_lists_the_conv_morphisms(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "seed.json"
    save(_image_mlp((1, 8, 8)), path)
    assert main(["graph", "morphisms", str(path), "--json"]) == 0
    sites = {m["name"]: m["sites"] for m in json.loads(capsys.readouterr().out)}
    assert sites["conv.input"] == ["flat"]
    assert sites["conv.widen_kernel"] == [] and sites["widen.tied"] == []
    out = tmp_path / "child.json"
    assert main(["graph", "grow", str(path), "conv.input", "--param", "activation=relu",
                 "--out", str(out)]) == 0
    assert "conv.input at flat" in capsys.readouterr().out


def test_optimizer_state_stays_on_its_taps_after_kernel_widening() -> None:
    parent = builders.cnn((1, 6, 6), channels=(3,), hidden=(), num_classes=3)
    module = parent.to_module()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    inputs, labels = batch_for(parent, n=8)
    torch.nn.functional.cross_entropy(module(inputs), labels).backward()
    optimizer.step()
    child = morphisms.apply("conv.widen_kernel", parent, "conv1").child
    child_module = child.to_module()
    moved = transfer_optimizer(optimizer, module, child_module, parent, child)
    old = optimizer.state[module.get_parameter("layers.conv1.weight")]["exp_avg"]
    new = moved.state[child_module.get_parameter("layers.conv1.weight")]["exp_avg"]
    assert torch.equal(new[:, :, 1:4, 1:4], old)  # the old taps, centred as the weights
    assert new.abs().sum() == old.abs().sum()
