"""conv.downsample: pooling inserted after a conv activation, honestly not exact."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from morphsearch import builders, morphisms
from morphsearch.arch import Architecture
from morphsearch.builders import GraphBuilder
from morphsearch.errors import MorphismNotApplicable
from tests.morphisms.strategies import outputs

F64 = torch.float64


def _pointwise_net() -> Architecture:
    """1x1 conv -> relu -> flatten -> linear on 2x6x6 images."""
    b = GraphBuilder((2, 6, 6))
    h = b.add("relu", b.add("conv2d", b.input, out_channels=3, kernel_size=1, name="c1"),
              name="r1")
    out = b.add("linear", b.add("flatten", h, name="flat"), out_features=4, name="head")
    return b.build(out, dtype=F64, seed=8)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_block_constant_images_give_the_same_output(pool: str) -> None:
    # Every 2x2 window constant: pooling loses nothing, and the head's resampled weights
    # (each window's weights summed) give the parent's output exactly.
    parent = _pointwise_net()
    result = morphisms.apply("conv.downsample", parent, "r1", pool=pool)
    child = result.child
    assert child.shape("flat") == (27,) and child.weights["head"]["weight"].shape == (4, 27)
    coarse = torch.randn(5, 2, 3, 3, dtype=F64)
    blocky = coarse.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    for train in (False, True):
        expected = outputs(parent, blocky, train=train)
        assert (outputs(child, blocky, train=train) - expected).abs().max() <= 1e-10


def test_it_does_not_claim_to_preserve_and_records_how_far_it_moved() -> None:
    parent = builders.cnn((1, 8, 8), channels=(3, 4), hidden=(5,), num_classes=3, dtype=F64)
    assert morphisms.sites("conv.downsample", parent) == ["relu1", "relu2"]
    assert not morphisms.get("conv.downsample").preserves({})
    result = morphisms.apply("conv.downsample", parent, "relu2")
    assert result.record.preservation_error is not None
    assert result.record.preservation_error > 1e-3  # random inputs are not block-constant
    assert result.child.shape("pool") == (4, 2, 2)
    assert result.child.weights["fc1"]["weight"].shape == (5, 16)


@pytest.mark.parametrize(("site", "params", "message"), [
    ("c1", {}, r"'c1' is conv2d; pooling goes after a hidden activation of a conv"),
    ("r1", {"pool": "min"}, "pool='min' must be 'max' or 'avg'"),
    ("r1", {"kernel_size": 1}, "kernel_size=1 must be an int >= 2"),
    ("r1", {"kernel_size": 7}, r"'r1' has spatial size \[6, 6\], smaller than the pool 7"),
])
def test_bad_sites_and_parameters_are_refused(site: str, params: dict[str, Any],
                                              message: str) -> None:
    with pytest.raises(MorphismNotApplicable, match=message) as info:
        morphisms.apply("conv.downsample", _pointwise_net(), site, **params)
    assert "\n" not in str(info.value)


def test_a_resolution_a_later_layer_cannot_take_is_no_site() -> None:
    b = GraphBuilder((1, 4, 4))
    h = b.add("relu", b.add("conv2d", b.input, out_channels=2, kernel_size=1), name="r1")
    h = b.add("conv2d", h, out_channels=2, kernel_size=3, name="c2")  # needs >= 3x3
    arch = b.build(b.add("linear", b.add("flatten", h), out_features=2), dtype=F64)
    assert morphisms.sites("conv.downsample", arch) == []
    assert "does not fit a later layer" in (morphisms.get("conv.downsample")
                                            .why_not(arch, "r1") or "")
