"""Architecture construction, validation, immutability, params/FLOPs and hashes."""

from __future__ import annotations

import math

import networkx as nx
import pytest
import torch

from morphsearch import builders
from morphsearch.arch import Architecture, NodeSpec
from morphsearch.builders import GraphBuilder
from morphsearch.errors import InvalidArchitecture


def test_nodespec_fills_defaults_and_compares_by_value() -> None:
    assert NodeSpec("linear", {"out_features": 8}) == NodeSpec("linear", out_features=8, bias=True)
    assert NodeSpec("linear", out_features=8) != NodeSpec("linear", out_features=9)
    assert NodeSpec("conv2d", out_channels=4, kernel_size=3)["padding"] == 0


@pytest.mark.parametrize(
    ("op", "attrs", "fragment"),
    [
        ("linearr", {}, "unknown op 'linearr'; valid ops:"),
        ("linear", {}, "missing attribute 'out_features'"),
        ("linear", {"out_features": 0}, "invalid value 0"),
        ("linear", {"out_features": True}, "invalid value True"),
        ("linear", {"out_features": 3, "kernel": 2}, "no attribute 'kernel'; valid attributes: bias"),
        ("dropout", {"p": 1.0}, "invalid value 1.0"),
    ],
)
def test_nodespec_rejects_bad_attributes(op: str, attrs: dict, fragment: str) -> None:
    with pytest.raises(InvalidArchitecture, match=fragment.replace("(", r"\(")):
        NodeSpec(op, attrs)


def test_mlp_params_and_flops_match_hand_count() -> None:
    arch = builders.mlp([64, 16, 10])
    assert arch.num_params == 64 * 16 + 16 + 16 * 10 + 10
    # 2 FLOPs per multiply-add, one per bias add, one per ReLU.
    assert arch.flops == (2 * 64 * 16 + 16) + 16 + (2 * 16 * 10 + 10)
    assert arch.shape("fc1") == (16,) and arch.output_shape == (10,)


def test_params_match_pytorch_count() -> None:
    for arch in (builders.cnn(batchnorm=True), builders.resnet(), builders.mlp([5, 7, 3])):
        module = arch.to_module()
        assert arch.num_params == sum(p.numel() for p in module.parameters())


def test_conv_flops_and_shapes() -> None:
    b = GraphBuilder((3, 10, 10))
    h = b.add("conv2d", b.input, out_channels=4, kernel_size=3, stride=2, padding=1, name="c")
    arch = b.build(b.add("flatten", h))
    assert arch.shape("c") == (4, 5, 5)
    assert arch.node_flops("c") == (2 * 3 * 9 + 1) * 4 * 5 * 5


def test_graph_is_frozen_and_weights_are_private_copies() -> None:
    arch = builders.mlp([4, 3, 2])
    with pytest.raises(nx.NetworkXError, match="Frozen"):
        arch.graph.add_node("extra")
    before = arch.weights_hash
    copy = arch.weights_copy()
    copy["fc1"]["weight"].add_(1.0)
    assert Architecture(arch.graph, arch.weights).weights_hash == before
    assert arch.weights_hash == before
    with pytest.raises(TypeError):
        arch.weights["fc1"]["weight"] = torch.zeros(3, 4)  # type: ignore[index]


def test_given_weights_are_copied_not_aliased() -> None:
    arch = builders.mlp([4, 3, 2])
    weights = arch.weights_copy()
    child = arch.with_weights(weights)
    weights["fc1"]["weight"].zero_()
    assert child.weights_hash == arch.weights_hash


def test_structure_hash_ignores_names_and_weights_but_not_structure() -> None:
    a = builders.mlp([4, 3, 2], seed=0)
    b = builders.mlp([4, 3, 2], seed=1)
    assert a.structure_hash == b.structure_hash
    assert a.weights_hash != b.weights_hash
    renamed = nx.relabel_nodes(nx.DiGraph(a.graph), {"fc1": "hidden", "relu1": "act"})
    c = Architecture(renamed, {("hidden" if n == "fc1" else n): w for n, w in a.weights.items()})
    assert c.structure_hash == a.structure_hash
    assert c.weights_hash == a.weights_hash
    assert builders.mlp([4, 5, 2]).structure_hash != a.structure_hash
    assert builders.mlp([4, 3, 2], activation="tanh").structure_hash != a.structure_hash


def test_shared_node_and_duplicated_node_hash_differently() -> None:
    shared = GraphBuilder((4,))
    h = shared.add("linear", shared.input, out_features=4, name="a")
    s1 = shared.build(shared.add("add", h, shared.add("relu", h)))
    dup = GraphBuilder((4,))
    h1 = dup.add("linear", dup.input, out_features=4, name="a1")
    h2 = dup.add("linear", dup.input, out_features=4, name="a2")
    s2 = dup.build(dup.add("add", h1, dup.add("relu", h2)))
    assert s1.structure_hash != s2.structure_hash


def test_same_seed_same_weights() -> None:
    assert builders.cnn(seed=3).weights_hash == builders.cnn(seed=3).weights_hash
    assert builders.cnn(seed=3).weights_hash != builders.cnn(seed=4).weights_hash


def test_dtype_float64_and_cast() -> None:
    arch = builders.mlp([4, 3, 2], dtype=torch.float64)
    assert arch.dtype == torch.float64
    assert arch.to(torch.float32).dtype == torch.float32


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda g: g.add_edge("fc2", "fc1", port=1), "cycle through nodes"),
        (lambda g: g.remove_node("out"), "exactly one output node, found 0"),
        (lambda g: (g.add_node("y", spec=NodeSpec("input", shape=[4])), g.add_edge("y", "fc1", port=1)),
         "exactly one input node, found 2"),
        (lambda g: (g.add_node("z", spec=NodeSpec("relu")), g.add_edge("fc1", "z")), "node 'z' is dangling"),
        (lambda g: g.add_node("island", spec=NodeSpec("relu")), "node 'island'"),
        (lambda g: g.add_node("bad name", spec=NodeSpec("relu")), "node name 'bad name' is not valid"),
        (lambda g: g.add_edge("x", "fc2", port=1), "node 'fc2' (linear) takes 1 input(s), got 2"),
    ],
)
def test_invalid_graphs_name_the_problem(mutate, fragment: str) -> None:
    graph = builders.mlp([4, 3, 2]).editable_graph()
    mutate(graph)
    with pytest.raises(InvalidArchitecture) as info:
        Architecture(graph)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_linear_after_image_says_insert_flatten() -> None:
    b = GraphBuilder((1, 8, 8))
    h = b.add("conv2d", b.input, out_channels=2, kernel_size=3, name="c")
    with pytest.raises(InvalidArchitecture, match=r"node 'fc' .*insert a flatten node"):
        b.build(b.add("linear", h, out_features=3, name="fc"))


@pytest.mark.parametrize(
    ("weights_edit", "fragment"),
    [
        (lambda w: w["fc1"].update(weight=torch.zeros(2, 2)), "has shape [2, 2], expected [3, 4]"),
        (lambda w: w["fc1"].pop("bias"), "node 'fc1' weight 'bias' is missing"),
        (lambda w: w["fc1"].update(gamma=torch.zeros(3)), "has no parameter 'gamma'"),
        (lambda w: w.update(ghost={}), "'ghost', which is not a node"),
        (lambda w: w["fc2"]["bias"].fill_(float("nan")), "contains NaN"),
        (lambda w: w["fc2"].update(bias=torch.zeros(2, dtype=torch.float64)), "use Architecture.to"),
    ],
)
def test_bad_weights_are_refused(weights_edit, fragment: str) -> None:
    arch = builders.mlp([4, 3, 2])
    weights = arch.weights_copy()
    weights_edit(weights)
    with pytest.raises(InvalidArchitecture) as info:
        arch.with_weights(weights)
    assert fragment in str(info.value)


def test_concat_and_ports_keep_order() -> None:
    b = GraphBuilder((2, 4, 4))
    a = b.add("conv2d", b.input, out_channels=3, kernel_size=1, name="a")
    c = b.add("conv2d", b.input, out_channels=5, kernel_size=1, name="c")
    cat = b.add("concat", c, a, name="cat")
    arch = b.build(b.add("global_avgpool", cat))
    assert arch.inputs("cat") == ("c", "a")
    assert arch.shape("cat") == (8, 4, 4)
    x = torch.randn(2, 2, 4, 4)
    out = arch.to_module()(x)
    m = arch.to_module()
    expected = torch.cat([m.layers.c(x), m.layers.a(x)], dim=1).mean((2, 3))
    torch.testing.assert_close(out, expected)


def test_respecified_child_equals_a_fully_validated_one() -> None:
    # the fast-path constructor widening uses: same result as the full constructor, and
    # the same refusals for weights that do not fit the new attributes
    parent = builders.cnn((1, 6, 6), channels=(3, 4), hidden=(5,), num_classes=3)
    spec = parent.spec("conv1").replace(out_channels=5)
    weights = {node: dict(params) for node, params in parent.weights.items()}
    weights["conv1"]["weight"] = torch.randn(5, 1, 3, 3)
    weights["conv1"]["bias"] = torch.randn(5)
    weights["conv2"]["weight"] = torch.randn(4, 5, 3, 3)
    child = parent.respecified({"conv1": spec}, weights)
    graph = parent.editable_graph()
    graph.nodes["conv1"]["spec"] = spec
    full = Architecture(graph, weights)
    assert (child.structure_hash, child.weights_hash) == (full.structure_hash, full.weights_hash)
    assert [child.shape(n) for n in child] == [full.shape(n) for n in full]
    assert (child.num_params, child.flops) == (full.num_params, full.flops)
    assert child.shape("conv1") == (5, 6, 6) and parent.shape("conv1") == (3, 6, 6)
    assert child.weights["fc2"]["weight"] is parent.weights["fc2"]["weight"]  # shared copy
    # the child's graph (built on first use) is the full constructor's, also two
    # generations down from a child whose own graph was never built
    grandchild = child.respecified({"fc1": child.spec("fc1").replace(out_features=6)}, {
        **{node: dict(params) for node, params in child.weights.items()},
        "fc1": {"weight": torch.randn(6, 36), "bias": torch.randn(6)},
        "fc2": {"weight": torch.randn(3, 6), "bias": child.weights["fc2"]["bias"]},
    })
    graph.nodes["fc1"]["spec"] = grandchild.spec("fc1")
    full_grandchild = Architecture(graph, grandchild.weights)
    for lazy, built in ((grandchild, full_grandchild), (child, full)):
        assert dict(lazy.graph.nodes(data=True)) == dict(built.graph.nodes(data=True))
        assert list(lazy.graph.edges(data=True)) == list(built.graph.edges(data=True))
        assert lazy.graph.graph == built.graph.graph and nx.is_frozen(lazy.graph)
        assert lazy.to_json() == built.to_json()
    assert child.spec("fc1") == parent.spec("fc1")
    with pytest.raises(InvalidArchitecture, match=r"'conv2' weight 'weight' has shape"):
        parent.respecified({"conv1": spec}, {**weights, "conv2": parent.weights["conv2"]})
    with pytest.raises(InvalidArchitecture, match="NaN"):
        bad = {**weights, "conv1": {**weights["conv1"], "bias": torch.full((5,), math.nan)}}
        parent.respecified({"conv1": spec}, bad)
    with pytest.raises(InvalidArchitecture, match="keeps every op"):
        parent.respecified({"conv1": NodeSpec("linear", out_features=3)}, weights)


def test_all_finite_is_exact_where_the_sum_overflows_or_cancels() -> None:
    from morphsearch.arch.validate import all_finite

    big = torch.full((1000,), 3e38)  # finite values whose float32 sum overflows
    assert all_finite(big) and all_finite(torch.zeros(0))
    for bad in (math.nan, math.inf, -math.inf):
        x = torch.randn(1000, 20)
        x[517, 3] = bad
        assert not all_finite(x)
    cancels = torch.tensor([math.inf, -math.inf, 1.0])  # inf - inf: NaN, not finite
    assert not all_finite(cancels)
    assert not all_finite(torch.tensor([3e38, 3e38, math.nan]))


def test_ops_lists_the_ops_in_use() -> None:
    assert builders.mlp([4, 3, 2]).ops == {"input", "linear", "relu", "output"}
    assert {"conv2d", "batchnorm", "maxpool", "flatten"} <= builders.cnn(batchnorm=True).ops
