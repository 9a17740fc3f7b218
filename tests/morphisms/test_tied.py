"""widen.tied: the tie group through add, exactness of both modes, refusals."""

from __future__ import annotations

import pytest
import torch

from morphsearch import builders, morphisms
from morphsearch.arch import Architecture
from morphsearch.builders import GraphBuilder
from morphsearch.errors import MorphismNotApplicable
from morphsearch.morphisms import transfer_optimizer
from morphsearch.morphisms.tied import tied_group
from tests.morphisms.strategies import batch_for, outputs

F64 = torch.float64


def _max_error(parent: Architecture, child: Architecture) -> float:
    inputs, _ = batch_for(parent, n=6, seed=11)
    return max(
        float((outputs(parent, inputs, train=t) - outputs(child, inputs, train=t)).abs().max())
        for t in (False, True)
    )


def _trained_looking(arch: Architecture, seed: int = 0) -> Architecture:
    """Batch norms away from their identity init, so copying a channel's parameters and
    giving it fresh ones differ."""
    g = torch.Generator().manual_seed(seed)
    weights = arch.weights_copy()
    for node in arch.nodes:
        if arch.op(node) == "batchnorm":
            for name in ("weight", "bias", "running_mean"):
                weights[node][name] += torch.randn(weights[node][name].shape, generator=g,
                                                   dtype=F64)
            weights[node]["running_var"] += torch.rand(weights[node]["running_var"].shape,
                                                       generator=g, dtype=F64)
    return arch.with_weights(weights)


def _resnet() -> Architecture:
    return _trained_looking(
        builders.resnet((1, 4, 4), width=3, blocks=2, num_classes=3, dtype=F64, seed=4))


def test_the_residual_stream_is_one_group() -> None:
    arch = _resnet()
    group = tied_group(arch, "b1_conv2")
    assert group.sites == ("stem", "b1_conv2", "b2_conv2")
    assert group.adds == ("b1_add", "b2_add")
    assert [c.node for c in group.consumers] == ["b1_conv1", "b2_conv1", "fc"]
    assert morphisms.sites("widen.tied", arch) == ["stem", "b1_conv2", "b2_conv2"]
    # the first conv of a block is no tied site: it widens alone, as before
    assert morphisms.sites("widen.split", arch) == ["b1_conv1", "b2_conv1"]


@pytest.mark.parametrize("mode", ["split", "random"])
def test_tied_widening_of_a_resnet_is_exact(mode: str) -> None:
    parent = _resnet()
    result = morphisms.apply("widen.tied", parent, "stem", k=2, mode=mode, seed=3)
    child = result.child
    for site in ("stem", "b1_conv2", "b2_conv2"):
        assert child.spec(site)["out_channels"] == 5
    for consumer in ("b1_conv1", "b2_conv1"):
        assert child.weights[consumer]["weight"].shape == (3, 5, 3, 3)
    assert child.weights["fc"]["weight"].shape == (3, 5)
    assert child.shape("b2_add") == (5, 4, 4)
    if mode == "random":  # new units compute exact zeros in every tied layer
        assert not child.weights["b1_conv2"]["weight"][3:].any()
    assert _max_error(parent, child) <= 1e-10
    assert result.record.preservation_error is not None
    assert result.record.preservation_error <= 1e-10


def test_split_copies_the_unit_in_every_tied_layer() -> None:
    parent = _resnet()
    child = morphisms.apply("widen.tied", parent, "b2_conv2", units=[1, 1]).child
    for site in ("stem", "b1_conv2", "b2_conv2"):
        w = child.weights[site]["weight"]
        assert torch.equal(w[3], w[1]) and torch.equal(w[4], w[1])
    fc = child.weights["fc"]["weight"]
    assert torch.allclose(fc[:, 1] * 3, parent.weights["fc"]["weight"][:, 1])
    assert _max_error(parent, child) <= 1e-10


def test_a_layer_that_is_site_and_consumer_stays_exact() -> None:
    # h -> conv -> add(conv, h): the conv's output and input are the same group
    b = GraphBuilder((2, 4, 4))
    h = b.add("tanh", b.add("conv2d", b.input, out_channels=3, kernel_size=1, name="stem"),
              name="h")
    r = b.add("add", b.add("conv2d", h, out_channels=3, kernel_size=3, padding=1, name="c"), h,
              name="join")
    parent = b.build(b.add("linear", b.add("flatten", r, name="flat"), out_features=2),
                     dtype=F64, seed=1)
    group = tied_group(parent, "c")
    assert group.sites == ("stem", "c") and [x.node for x in group.consumers] == ["c", "fc1"]
    assert dict(group.path)["flat"] == 16
    for mode in ("split", "random"):
        child = morphisms.apply("widen.tied", parent, "c", k=3, mode=mode, seed=2).child
        assert child.weights["c"]["weight"].shape == (6, 6, 3, 3)  # both axes grow
        assert child.weights["fc1"]["weight"].shape == (2, 6 * 16)
        assert _max_error(parent, child) <= 1e-10, mode


def test_dense_branches_joined_by_add_widen_together() -> None:
    b = GraphBuilder((4,))
    a = b.add("relu", b.add("linear", b.input, out_features=3, name="fa"), name="ra")
    c = b.add("batchnorm", b.add("linear", b.input, out_features=3, name="fb"), name="bn")
    h = b.add("tanh", b.add("add", a, c, name="join"), name="t")
    parent = _trained_looking(
        b.build(b.add("linear", h, out_features=2, name="head"), dtype=F64, seed=6))
    assert morphisms.sites("widen.tied", parent) == ["fa", "fb"]
    child = morphisms.apply("widen.tied", parent, "fa", k=4, seed=1).child
    assert child.shape("join") == (7,)
    assert _max_error(parent, child) <= 1e-10


def test_the_optimizer_state_follows_a_tied_widening() -> None:
    parent = builders.resnet((1, 4, 4), width=3, blocks=2, num_classes=3, seed=4)
    module = parent.to_module()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    inputs, labels = batch_for(parent, n=8)
    torch.nn.functional.cross_entropy(module(inputs), labels).backward()
    optimizer.step()
    child = morphisms.apply("widen.tied", parent, "stem", k=2).child
    child_module = child.to_module()
    moved = transfer_optimizer(optimizer, module, child_module, parent, child)
    state = moved.state[child_module.get_parameter("layers.b1_conv2.weight")]
    old = optimizer.state[module.get_parameter("layers.b1_conv2.weight")]
    assert torch.equal(state["exp_avg"][:3], old["exp_avg"])
    assert not state["exp_avg"][3:].any()


def _refusal(arch: Architecture, site: str) -> str:
    with pytest.raises(MorphismNotApplicable) as info:
        morphisms.apply("widen.tied", arch, site)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_group_reaching_concat_or_the_input_is_refused() -> None:
    b = GraphBuilder((3,))
    a = b.add("relu", b.add("linear", b.input, out_features=2, name="fa"))
    c = b.add("relu", b.add("linear", b.input, out_features=3, name="fb"))
    cat = b.add("concat", a, c, name="cat")
    concat = b.build(b.add("linear", cat, out_features=2), dtype=F64)
    message = _refusal(concat, "fa")
    assert "'fa' cannot be widened with its tie group: the units reach concat" in message
    assert "at 'cat'" in message

    b = GraphBuilder((3,))
    h = b.add("add", b.input, b.add("linear", b.input, out_features=3, name="f"), name="join")
    from_input = b.build(b.add("linear", h, out_features=2), dtype=F64)
    message = _refusal(from_input, "f")
    assert "the units come from input (its width cannot grow) at 'x'" in message


def test_a_layer_without_add_is_sent_to_the_plain_widenings() -> None:
    message = _refusal(builders.mlp([4, 3, 2], dtype=F64), "fc1")
    assert "'fc1' feeds no add; widen it alone with widen.random" in message


@pytest.mark.parametrize(("params", "message"), [
    ({"k": 0}, "k=0 must be a positive int"),
    ({"mode": "grow"}, "mode='grow' must be 'split' or 'random'"),
    ({"units": [3]}, r"units=\[3\] must be a non-empty list of ints in \[0, 3\)"),
    ({"units": [0], "mode": "random"}, "units= needs mode='split'"),
])
def test_bad_parameters_are_refused(params: dict[str, object], message: str) -> None:
    with pytest.raises(MorphismNotApplicable, match=message):
        morphisms.apply("widen.tied", _resnet(), "stem", **params)  # type: ignore[arg-type]
