"""Bad conv/pool attributes and layouts: one line naming the node and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from morphsearch.arch import load
from morphsearch.builders import GraphBuilder
from morphsearch.errors import InvalidArchitecture


def _one_node(shape: tuple[int, ...], op: str, **attrs: Any) -> None:
    b = GraphBuilder(shape)
    b.build(b.add(op, b.input, name="c1", **attrs))


@pytest.mark.parametrize(
    ("shape", "op", "attrs", "message"),
    [
        ((1, 3), "conv1d", {"out_channels": 2, "kernel_size": 5},
         "node 'c1' (conv1d): kernel 5 with padding 0 does not fit the length-3 input; "
         "lower kernel_size or raise padding"),
        ((1, 4, 6), "conv2d", {"out_channels": 2, "kernel_size": [5, 3]},
         "node 'c1' (conv2d): kernel 5x3 with padding 0 does not fit the 4x6 input; "
         "lower kernel_size or raise padding"),
        ((1, 4, 4), "conv1d", {"out_channels": 2, "kernel_size": 3},
         "node 'c1' (conv1d): input has shape [1, 4, 4] but conv1d needs a (channels, "
         "length) signal; use conv2d on images"),
        ((1, 9), "conv2d", {"out_channels": 2, "kernel_size": 3},
         "conv2d needs a (channels, height, width) image; use conv1d on signals"),
        ((1, 4, 4), "conv2d", {"out_channels": 2, "kernel_size": [3, 3, 3]},
         "node 'c1': conv2d attribute 'kernel_size' has invalid value [3, 3, 3] "
         "(a positive int or a list of 2)"),
        ((1, 4), "conv1d", {"out_channels": 2, "kernel_size": 3, "stride": 0},
         "conv1d attribute 'stride' has invalid value 0 (a positive int)"),
        ((2, 8), "maxpool", {"kernel_size": [2, 2]},
         "node 'c1' (maxpool): kernel_size [2, 2] has 2 entries but the input has 1 spatial "
         "dim(s); give an int or a list of 1"),
        ((2, 8), "avgpool", {"kernel_size": 2, "padding": 2},
         "padding 2 must be at most half of kernel_size 2; lower padding"),
        ((2, 3), "maxpool", {"kernel_size": 4},
         "pool kernel 4 with padding 0 does not fit the length-3 input"),
        ((2,), "global_avgpool", {},
         "node 'c1' (global_avgpool): input has shape [2] but global_avgpool needs"),
        ((5,), "maxpool", {"kernel_size": 2}, "pooling needs a (channels, length) signal"),
    ],
)
def test_bad_layout_or_attribute_names_node_and_fix(
    shape: tuple[int, ...], op: str, attrs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArchitecture) as info:
        _one_node(shape, op, **attrs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_graph_file_with_a_kernel_too_big_names_file_node_and_fix() -> None:
    data = {
        "format": 1, "directed": True, "multigraph": False, "graph": {},
        "nodes": [{"id": "x", "op": "input", "shape": [1, 3]},
                  {"id": "c1", "op": "conv1d", "out_channels": 2, "kernel_size": 5},
                  {"id": "out", "op": "output"}],
        "edges": [{"source": "x", "target": "c1"}, {"source": "c1", "target": "out"}],
    }
    with pytest.raises(InvalidArchitecture, match=r"node 'c1' \(conv1d\): kernel 5 .*raise "
                       r"padding"):
        load(data)


def test_input_of_rank_four_is_refused_with_examples() -> None:
    with pytest.raises(InvalidArchitecture, match=r"e\.g\. \[64\], \[1, 40\] or \[1, 8, 8\]"):
        GraphBuilder((1, 2, 3, 4))


def test_a_length_one_conv_output_is_accepted() -> None:
    # (3 + 2*1 - 5) // 1 + 1 = 1: PyTorch accepts it, so does the IR
    b = GraphBuilder((1, 3))
    arch = b.build(b.add("conv1d", b.input, out_channels=2, kernel_size=5, padding=1))
    assert arch.output_shape == (2, 1)
