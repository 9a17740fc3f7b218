"""Every op in ``OPS``, end to end: one tiny graph per example, checked against PyTorch.

``EXAMPLES`` must name every op of the table (a test fails otherwise), so an op added to
``OPS`` is under these checks as soon as it has an example: the inferred shape is the
compiled module's, the parameter count and FLOPs are the module's, the module (generated
code over ``nn.Module`` layers), ``evaluate`` (generated code over functional layers) and
an independent PyTorch reference agree, and the JSON round trip keeps the hash.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from morphsearch.arch import OPS, Architecture, load
from morphsearch.arch.canonical import to_json
from morphsearch.arch.compile import evaluate
from morphsearch.builders import GraphBuilder

Reference = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class Example:
    """``x -> op(**attrs) -> out`` on ``input_shape`` (``arity`` inputs: identity and
    tanh branches of ``x``), with an optional eval-mode reference in plain PyTorch."""

    op: str
    input_shape: tuple[int, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    arity: int = 1
    reference: Reference | None = None

    @property
    def id(self) -> str:
        shown = ",".join(f"{k}={v}" for k, v in self.attrs.items())
        return f"{self.op}[{'x'.join(map(str, self.input_shape))}]({shown})"


def _bn_eval(x: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
    view = (1, -1) + (1,) * (x.dim() - 2)
    scale = w["weight"] / torch.sqrt(w["running_var"] + 1e-5)
    return (x - w["running_mean"].view(view)) * scale.view(view) + w["bias"].view(view)


EXAMPLES = [
    Example("input", (3,)),
    Example("input", (2, 5)),
    Example("input", (2, 3, 4)),
    Example("output", (4,), reference=lambda x, w: x),
    Example("linear", (5,), {"out_features": 3},
            reference=lambda x, w: x @ w["weight"].T + w["bias"]),
    Example("linear", (5,), {"out_features": 2, "bias": False}),
    Example("conv1d", (2, 9), {"out_channels": 3, "kernel_size": 5, "stride": 2, "padding": 1},
            reference=lambda x, w: F.conv1d(x, w["weight"], w["bias"], 2, 1)),
    Example("conv1d", (1, 6), {"out_channels": 2, "kernel_size": 3, "bias": False}),
    Example("conv2d", (2, 5, 5), {"out_channels": 3, "kernel_size": 3, "padding": 1},
            reference=lambda x, w: F.conv2d(x, w["weight"], w["bias"], 1, 1)),
    Example("conv2d", (2, 5, 7),
            {"out_channels": 3, "kernel_size": [2, 3], "stride": [1, 2], "padding": [1, 0]},
            reference=lambda x, w: F.conv2d(x, w["weight"], w["bias"], (1, 2), (1, 0))),
    Example("batchnorm", (4,), reference=_bn_eval),
    Example("batchnorm", (3, 6), reference=_bn_eval),
    Example("batchnorm", (2, 3, 3), reference=_bn_eval),
    Example("layernorm", (3, 4),
            reference=lambda x, w: F.layer_norm(x, (3, 4), w["weight"], w["bias"])),
    Example("relu", (2, 5), reference=lambda x, w: torch.relu(x)),
    Example("tanh", (4,), reference=lambda x, w: torch.tanh(x)),
    Example("gelu", (4,), reference=lambda x, w: F.gelu(x)),
    Example("selu", (2, 2, 2), reference=lambda x, w: F.selu(x)),
    Example("identity", (3,), reference=lambda x, w: x),
    Example("dropout", (2, 4), {"p": 0.25}, reference=lambda x, w: x),
    Example("add", (2, 4), arity=2, reference=lambda x, w: x + torch.tanh(x)),
    Example("concat", (2, 3, 3), arity=2,
            reference=lambda x, w: torch.cat([x, torch.tanh(x)], dim=1)),
    Example("flatten", (2, 3, 4), reference=lambda x, w: x.reshape(len(x), -1)),
    Example("flatten", (3, 5)),
    Example("maxpool", (2, 9), {"kernel_size": 2},
            reference=lambda x, w: F.max_pool1d(x, 2)),
    Example("maxpool", (1, 5, 6), {"kernel_size": [2, 3], "stride": 1, "padding": [1, 0]},
            reference=lambda x, w: F.max_pool2d(x, (2, 3), 1, (1, 0))),
    Example("avgpool", (2, 7), {"kernel_size": 3, "stride": 2, "padding": 1},
            reference=lambda x, w: F.avg_pool1d(x, 3, 2, 1)),
    Example("avgpool", (2, 4, 4), {"kernel_size": 2},
            reference=lambda x, w: F.avg_pool2d(x, 2)),
    Example("global_avgpool", (3, 7), reference=lambda x, w: x.mean(dim=2)),
    Example("global_avgpool", (3, 4, 5), reference=lambda x, w: x.mean(dim=(2, 3))),
]


def _build(example: Example) -> Architecture:
    b = GraphBuilder(example.input_shape, name=f"{example.op}-example")
    if example.op in ("input", "output"):  # every graph has them: x -> out
        return b.build(b.input, dtype=torch.float64)
    if example.arity == 2:
        sources = (b.add("identity", b.input, name="a"), b.add("tanh", b.input, name="b"))
    else:
        sources = (b.input,)
    node = b.add(example.op, *sources, name="node", **example.attrs)
    arch = b.build(node, seed=3, dtype=torch.float64)
    return _random_statistics(arch)


def _random_statistics(arch: Architecture) -> Architecture:
    """Running statistics away from PyTorch's (0, 1), so eval mode tests something."""
    weights = arch.weights_copy()
    g = torch.Generator().manual_seed(5)
    for params in weights.values():
        for name, shift in (("running_mean", -0.5), ("running_var", 0.5)):
            if name in params:
                params[name] = shift + torch.rand(params[name].shape, generator=g,
                                                  dtype=torch.float64)
    return arch.with_weights(weights)


def _inputs(arch: Architecture, n: int = 4) -> torch.Tensor:
    """In the architecture's dtype (a graph without weights has the default dtype)."""
    g = torch.Generator().manual_seed(11)
    return torch.randn((n, *arch.input_shape), generator=g, dtype=torch.float64).to(arch.dtype)


def test_every_op_has_an_example() -> None:
    missing = sorted(set(OPS) - {e.op for e in EXAMPLES})
    assert not missing, f"add an Example for {missing} to EXAMPLES"


@pytest.fixture(params=EXAMPLES, ids=lambda e: e.id)
def example(request: pytest.FixtureRequest) -> Example:
    return request.param  # type: ignore[no-any-return]


def test_inferred_shape_is_the_modules(example: Example) -> None:
    arch = _build(example)
    out = arch.to_module().eval()(_inputs(arch))
    assert tuple(out.shape[1:]) == arch.output_shape


def test_param_count_and_specs_are_the_modules(example: Example) -> None:
    arch = _build(example)
    module = arch.to_module()
    assert arch.num_params == sum(p.numel() for p in module.parameters())
    for node in arch.nodes:
        specs = arch.param_specs(node)
        state = module.layers[node].state_dict() if node in module.layers else {}
        assert {k: tuple(v.shape) for k, v in state.items()} == {
            k: s.shape for k, s in specs.items()
        }
        opdef = OPS[arch.op(node)]
        assert opdef.parametric == any(s.trainable for s in specs.values())
        assert opdef.has_module == (node in module.layers)
        if opdef.is_layer:
            assert arch.spec(node)[opdef.width_attr] == arch.shape(node)[0]


@pytest.mark.parametrize(  # PyTorch's counter counts matmuls and convolutions only
    "layer", [e for e in EXAMPLES if OPS[e.op].is_layer], ids=lambda e: e.id
)
def test_layer_flops_are_what_pytorch_counts_plus_the_bias(layer: Example) -> None:
    example = layer
    arch = _build(example)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        arch.to_module()(_inputs(arch, n=1))
    bias = math.prod(arch.shape("node")) if example.attrs.get("bias", True) else 0
    assert arch.flops == counter.get_total_flops() + bias


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_module_evaluate_and_reference_agree(example: Example, train: bool) -> None:
    arch = _build(example)
    x = _inputs(arch)
    module = arch.to_module().train(train)
    for sub in module.modules():  # dropout masks are draws, not the function
        if isinstance(sub, torch.nn.Dropout):
            sub.eval()
    with torch.no_grad():
        expected = module(x)
        got = evaluate(arch, x, train=train, dropout=False)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    if example.reference is not None and not train:
        reference = example.reference(x, dict(arch.weights.get("node", {})))
        torch.testing.assert_close(expected, reference, rtol=0, atol=1e-6)


def test_compiled_module_pickles_and_prints_as_pytorch_layers(example: Example) -> None:
    arch = _build(example)
    module = arch.to_module().eval()
    again = pickle.loads(pickle.dumps(module))
    x = _inputs(arch)
    with torch.no_grad():
        torch.testing.assert_close(again(x), module(x), rtol=0, atol=0)
    assert "_" not in "".join(type(m)._get_name(m) for m in module.layers.values())


def test_json_round_trip_keeps_the_hash(example: Example) -> None:
    arch = _build(example)
    again = load(to_json(arch))
    assert again.structure_hash == arch.structure_hash
    assert to_json(again) == to_json(arch)


@pytest.mark.parametrize(
    ("graph", "structure_hash"),
    [  # as computed before kernel_size/stride/padding took lists (commit 1f657ad)
        ("digits_cnn", "1ac69660e28b9007bef18d50509602104f6cde571b874c710dec3e4968ed21ec"),
        ("tiny_resnet", "78c6fcd2b9ba1d0cdf939117ead2892ab3a7ce5c9d42eebc4f441365d7e3c20e"),
    ],
)
def test_int_attributes_keep_their_earlier_hash(graph: str, structure_hash: str) -> None:
    path = Path(__file__).parents[2] / "graphs" / f"{graph}.json"
    assert load(path).structure_hash == structure_hash


def test_a_list_of_equal_sizes_is_the_int_it_repeats() -> None:
    def conv(**attrs: Any) -> Architecture:
        b = GraphBuilder((1, 6, 6))
        return b.build(b.add("conv2d", b.input, out_channels=2, name="c", **attrs))

    square = conv(kernel_size=3, stride=2, padding=1)
    spelled = conv(kernel_size=[3, 3], stride=(2, 2), padding=[1, 1])
    assert spelled.spec("c")["kernel_size"] == 3 and spelled.spec("c")["stride"] == 2
    assert spelled.structure_hash == square.structure_hash
    assert conv(kernel_size=[3, 1]).spec("c")["kernel_size"] == [3, 1]
