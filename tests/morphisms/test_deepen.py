"""deepen.identity and deepen.skip: what they insert, exactness, parameters and errors."""

from __future__ import annotations

import pytest
import torch

from morphsearch import builders, morphisms
from morphsearch.arch import Architecture
from morphsearch.builders import GraphBuilder
from morphsearch.errors import MorphismNotApplicable
from tests.morphisms.strategies import batch_for, outputs


def _new_nodes(parent: Architecture, child: Architecture) -> list[str]:
    return [n for n in child.nodes if n not in parent]


def test_identity_after_relu_repeats_relu_and_is_bitwise_exact() -> None:
    parent = builders.mlp([6, 5, 3])
    child = morphisms.apply("deepen.identity", parent, "relu1").child
    assert [child.op(n) for n in _new_nodes(parent, child)] == ["linear", "relu"]
    assert child.num_params == parent.num_params + 5 * 5 + 5
    assert child.inputs("fc2") == ("deep1_relu",)
    x = torch.randn(32, 6) * 10
    assert torch.equal(outputs(parent, x, train=True), outputs(child, x, train=True))


def test_identity_after_tanh_adds_no_activation() -> None:
    # tanh(tanh(z)) != tanh(z): repeating it would change the function.
    parent = builders.mlp([4, 3, 2], activation="tanh")
    child = morphisms.apply("deepen.identity", parent, "tanh1").child
    assert [child.op(n) for n in _new_nodes(parent, child)] == ["linear"]


def test_identity_conv_keeps_image_shape_with_any_odd_kernel() -> None:
    parent = builders.cnn((1, 5, 5), channels=(2,), hidden=(), num_classes=3,
                          dtype=torch.float64)
    child = morphisms.apply("deepen.identity", parent, "relu1", kernel_size=5).child
    conv = child.spec("deep1_conv")
    assert (conv["kernel_size"], conv["padding"], conv["stride"]) == (5, 2, 1)
    assert child.shape("deep1_conv") == parent.shape("relu1") == (2, 5, 5)
    x = torch.randn(4, 1, 5, 5, dtype=torch.float64)
    assert torch.equal(outputs(parent, x, train=False), outputs(child, x, train=False))


def test_identity_batchnorm_is_exact_in_eval_mode_only() -> None:
    parent = builders.mlp([4, 3, 2], dtype=torch.float64)
    result = morphisms.apply("deepen.identity", parent, "relu1", batchnorm=True)
    child = result.child
    x = torch.randn(16, 4, dtype=torch.float64)
    eval_err = (outputs(parent, x, train=False) - outputs(child, x, train=False)).abs().max()
    train_err = (outputs(parent, x, train=True) - outputs(child, x, train=True)).abs().max()
    assert eval_err <= 1e-12
    # Train mode normalises with batch statistics: not the identity, as documented, and
    # neither the operator's claim nor the recorded error (train mode measured) hide it.
    assert train_err > 1e-3
    identity = morphisms.get("deepen.identity")
    assert identity.preserves({"batchnorm": False}) and not identity.preserves(result.record.params)
    assert result.record.preservation_error is not None
    assert result.record.preservation_error > 1e-3
    plain = morphisms.apply("deepen.identity", parent, "relu1").record
    assert plain.preservation_error == 0.0


def test_skip_one_layer_is_a_zero_linear_branch_joined_by_add() -> None:
    parent = builders.mlp([4, 3, 2], activation="selu")
    child = morphisms.apply("deepen.skip", parent, "selu1", layers=1).child
    assert [child.op(n) for n in _new_nodes(parent, child)] == ["linear", "add"]
    assert child.inputs("skip1_add") == ("selu1", "skip1_fc1")
    assert not child.weights["skip1_fc1"]["weight"].any()


def test_skip_two_layers_with_batchnorm_is_exact_in_train_mode() -> None:
    # The zero last layer hides the batch norm, whatever the batch statistics.
    parent = builders.resnet((1, 4, 4), width=3, blocks=1, num_classes=2, dtype=torch.float64)
    child = morphisms.apply("deepen.skip", parent, "b1_relu", batchnorm=True, seed=5).child
    assert [child.op(n) for n in _new_nodes(parent, child)] == [
        "conv2d", "batchnorm", "relu", "conv2d", "add"]
    x = torch.randn(8, 1, 4, 4, dtype=torch.float64)
    assert torch.equal(outputs(parent, x, train=True), outputs(child, x, train=True))


def test_skip_first_layer_follows_the_seed_and_last_layer_learns() -> None:
    parent = builders.mlp([4, 3, 2])
    a = morphisms.apply("deepen.skip", parent, "relu1", seed=1).child
    b = morphisms.apply("deepen.skip", parent, "relu1", seed=2).child
    assert not torch.equal(a.weights["skip1_fc1"]["weight"], b.weights["skip1_fc1"]["weight"])
    module = a.to_module()
    inputs, labels = batch_for(a, n=16)
    torch.nn.functional.cross_entropy(module(inputs), labels).backward()
    assert module.layers["skip1_fc2"].weight.grad.abs().sum() > 0


def test_repeated_deepening_gets_fresh_names_and_stays_exact() -> None:
    arch = builders.mlp([4, 3, 2], dtype=torch.float64)
    x = torch.randn(8, 4, dtype=torch.float64)
    expected = outputs(arch, x, train=True)
    for _ in range(3):
        arch = morphisms.apply("deepen.identity", arch, "relu1").child
    arch = morphisms.apply("deepen.skip", arch, "deep3_relu").child
    assert {"deep1_fc", "deep2_fc", "deep3_fc", "skip1_add"} <= set(arch.nodes)
    assert torch.equal(outputs(arch, x, train=True), expected)


def test_input_port_order_of_consumers_is_kept() -> None:
    b = GraphBuilder((3,))
    left = b.add("relu", b.add("linear", b.input, out_features=2), name="left")
    right = b.add("tanh", b.add("linear", b.input, out_features=4), name="right")
    parent = b.build(b.add("linear", b.add("concat", left, right, name="cat"), out_features=2))
    child = morphisms.apply("deepen.identity", parent, "left").child
    assert child.inputs("cat") == ("deep1_relu", "right")
    x = torch.randn(5, 3)
    assert torch.equal(outputs(parent, x, train=False), outputs(child, x, train=False))


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("deepen.identity", {"kernel_size": 2}, "positive odd int"),
        ("deepen.skip", {"layers": 3}, "layers=1 or layers=2"),
        ("deepen.skip", {"layers": 1, "batchnorm": True}, "batchnorm needs layers=2"),
    ],
)
def test_bad_parameters_are_refused(name: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(MorphismNotApplicable, match=message):
        morphisms.apply(name, builders.cnn(), "relu1", **params)


def test_network_without_hidden_activation_has_no_site() -> None:
    b = GraphBuilder((3,))
    linear = b.build(b.add("linear", b.input, out_features=2))
    assert morphisms.sites("deepen.identity", linear) == []
    with pytest.raises(MorphismNotApplicable, match="does not apply anywhere"):
        morphisms.apply("deepen.skip", linear)


def test_sites_exclude_input_output_and_non_activation_nodes() -> None:
    arch = builders.cnn(batchnorm=True)
    assert morphisms.sites("deepen.identity", arch) == ["relu1", "relu2", "relu_fc1"]
