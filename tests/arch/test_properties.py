"""Property-based tests: random valid MLP / CNN / residual graphs.

Shape inference must agree with what PyTorch computes, JSON + safetensors must round-trip
exactly, and the hashes must be stable under round trips and renaming.
"""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from morphsearch.arch import Architecture, load, save
from morphsearch.arch.compile import evaluate
from morphsearch.builders import GraphBuilder

ACTS = st.sampled_from(["relu", "tanh", "gelu", "selu", "identity"])
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mlps(draw: st.DrawFn) -> Architecture:
    b = GraphBuilder((draw(st.integers(1, 12)),))
    h = b.input
    for _ in range(draw(st.integers(0, 3))):
        h = b.add("linear", h, out_features=draw(st.integers(1, 12)), bias=draw(st.booleans()))
        if draw(st.booleans()):
            h = b.add("batchnorm", h)
        h = b.add(draw(ACTS), h)
        if draw(st.booleans()):
            h = b.add("dropout", h, p=0.25)
    h = b.add("linear", h, out_features=draw(st.integers(1, 5)))
    return b.build(h, seed=draw(st.integers(0, 3)))


@st.composite
def cnns(draw: st.DrawFn) -> Architecture:
    size = draw(st.integers(5, 10))
    b = GraphBuilder((draw(st.integers(1, 3)), size, size))
    h = b.input
    for _ in range(draw(st.integers(1, 2))):
        k = draw(st.sampled_from([1, 3, 5]))
        h = b.add("conv2d", h, out_channels=draw(st.integers(1, 6)), kernel_size=k,
                  stride=draw(st.integers(1, 2)), padding=k // 2)
        if draw(st.booleans()):
            h = b.add("batchnorm", h)
        h = b.add(draw(ACTS), h)
    pool = draw(st.sampled_from(["maxpool", "avgpool", "none"]))
    if pool != "none":
        h = b.add(pool, h, kernel_size=2, stride=1)
    head = draw(st.sampled_from(["flatten", "global_avgpool"]))
    h = b.add(head, h)
    return b.build(b.add("linear", h, out_features=draw(st.integers(1, 5))))


@st.composite
def residuals(draw: st.DrawFn) -> Architecture:
    width = draw(st.integers(1, 8))
    b = GraphBuilder((3, 6, 6))
    h = b.add("conv2d", b.input, out_channels=width, kernel_size=3, padding=1)
    for _ in range(draw(st.integers(1, 3))):
        branch = b.add("conv2d", h, out_channels=width, kernel_size=3, padding=1)
        branch = b.add("batchnorm", branch)
        if draw(st.booleans()):
            side = b.add("conv2d", h, out_channels=width, kernel_size=1)
            joined = b.add("concat", branch, side)
            h = b.add("conv2d", joined, out_channels=width, kernel_size=1)
        else:
            h = b.add(draw(ACTS), b.add("add", branch, h))
    return b.build(b.add("linear", b.add("global_avgpool", h), out_features=4))


ARCHS = st.one_of(mlps(), cnns(), residuals())


@SETTINGS
@given(arch=ARCHS, batch=st.integers(1, 3))
def test_shape_inference_agrees_with_pytorch(arch: Architecture, batch: int) -> None:
    x = torch.randn(batch, *arch.input_shape)
    out = arch.to_module().eval()(x)
    assert tuple(out.shape) == (batch, *arch.output_shape)
    # every parametric layer's output shape as well
    module = arch.to_module().eval()
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        layer.register_forward_hook(
            lambda _m, _i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:]))
        )
        for name, layer in module.layers.items()
    ]
    module(x)
    for h in hooks:
        h.remove()
    for name, shape in shapes.items():
        assert shape == arch.shape(name), name


@SETTINGS
@given(arch=ARCHS)
def test_json_and_weights_round_trip(arch: Architecture, tmp_path_factory) -> None:
    path = Path(tmp_path_factory.mktemp("rt")) / "arch.json"
    save(arch, path)
    again = load(path)
    assert again.structure_hash == arch.structure_hash
    assert again.weights_hash == arch.weights_hash
    assert json.loads(path.read_text()) == arch.to_json()
    x = torch.randn(2, *arch.input_shape)
    assert torch.equal(arch.to_module().eval()(x), again.to_module().eval()(x))
    # node-link compatible: networkx reads the file as a graph
    g = nx.node_link_graph(json.loads(path.read_text()), edges="edges")
    assert set(g.nodes) == set(arch.nodes)


@SETTINGS
@given(arch=ARCHS, seed=st.integers(0, 10))
def test_hashes_are_deterministic_and_name_independent(arch: Architecture, seed: int) -> None:
    mapping = {n: f"n{i}_{seed}" for i, n in enumerate(reversed(arch.nodes))}
    renamed = Architecture(
        nx.relabel_nodes(arch.editable_graph(), mapping),
        {mapping[n]: dict(w) for n, w in arch.weights.items()},
    )
    assert renamed.structure_hash == arch.structure_hash
    assert renamed.weights_hash == arch.weights_hash
    assert Architecture(arch.graph, arch.weights).weights_hash == arch.weights_hash


def _layernorm_net() -> Architecture:
    b = GraphBuilder((5,))
    h = b.add("layernorm", b.add("linear", b.input, out_features=4), eps=1e-3)
    return b.build(b.add("linear", b.add("dropout", b.add("gelu", h), p=0.3), out_features=3),
                   seed=2)


@SETTINGS
@given(arch=st.one_of(ARCHS, st.just(_layernorm_net())), batch=st.integers(2, 4),
       train=st.booleans())
def test_evaluate_equals_the_compiled_module(arch: Architecture, batch: int,
                                             train: bool) -> None:
    # the functional forward (no module) computes the compiled module's function, with
    # the same dropout masks from the same global seed, and leaves the weights alone
    x = torch.randn(batch, *arch.input_shape)
    before = arch.weights_hash
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        expected = arch.to_module().train(train)(x)
        torch.manual_seed(5)
        got = evaluate(arch, x, train=train)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert Architecture(arch.graph, arch.weights).weights_hash == before
    # dropout=False: batch statistics in train mode, dropout modules off
    module = arch.to_module().train(train)
    for layer in module.modules():
        if isinstance(layer, torch.nn.Dropout):
            layer.eval()
    torch.testing.assert_close(evaluate(arch, x, train=train, dropout=False), module(x),
                               rtol=1e-6, atol=1e-6)
    seen: list[str] = []
    evaluate(arch, x, hook=lambda node, _inp, _out: seen.append(node))
    assert seen == [n for n in arch.nodes if arch.op(n) in
                    ("linear", "conv2d", "batchnorm", "layernorm", "dropout")]
