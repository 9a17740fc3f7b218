"""Architecture -> ``torch.nn.Module`` (a ``torch.fx.GraphModule``) and weights back out.

The compiled module has one submodule per parametric or stateful node under
``module.layers[<node>]`` and a generated ``forward`` (torch.fx code generation), so a
forward pass costs what the hand-written module would: no interpreter loop over nodes.

ReLU: the IR's ``relu`` is ``torch.clamp(x, min=0)``. Its forward equals ``torch.relu``,
but autograd gives it derivative 1 at 0 where ``torch.relu`` gives 0. That matters for
growth: GradMax starts new neurons with zero incoming weights, so their pre-activation
is exactly 0; with relu'(0) = 0 they would never receive a gradient and stay frozen.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from morphsearch.errors import WeightsError

if TYPE_CHECKING:
    from morphsearch.arch.ir import Architecture, NodeSpec

__all__ = ["compile_module", "init_weights", "make_layer", "relu", "weights_from_module"]


def relu(x: torch.Tensor) -> torch.Tensor:
    """ReLU whose autograd derivative at 0 is 1 (see the module docstring)."""
    return torch.clamp(x, min=0)


# ------------------------------------------------- modules for stateful nodes


def _linear(spec: NodeSpec, in_shape: tuple[int, ...]) -> nn.Module:
    return nn.Linear(in_shape[0], spec["out_features"], bias=spec["bias"])


def _conv2d(spec: NodeSpec, in_shape: tuple[int, ...]) -> nn.Module:
    return nn.Conv2d(
        in_shape[0],
        spec["out_channels"],
        spec["kernel_size"],
        stride=spec["stride"],
        padding=spec["padding"],
        bias=spec["bias"],
    )


def _batchnorm(spec: NodeSpec, in_shape: tuple[int, ...]) -> nn.Module:
    cls = nn.BatchNorm1d if len(in_shape) == 1 else nn.BatchNorm2d
    return cls(in_shape[0], eps=spec["eps"], momentum=spec["momentum"])


def _layernorm(spec: NodeSpec, in_shape: tuple[int, ...]) -> nn.Module:
    return nn.LayerNorm(list(in_shape), eps=spec["eps"])


def _dropout(spec: NodeSpec, in_shape: tuple[int, ...]) -> nn.Module:
    return nn.Dropout(spec["p"])


_LAYERS: dict[str, Callable[[Any, tuple[int, ...]], nn.Module]] = {
    "linear": _linear,
    "conv2d": _conv2d,
    "batchnorm": _batchnorm,
    "layernorm": _layernorm,
    "dropout": _dropout,
}


def make_layer(spec: NodeSpec, in_shape: tuple[int, ...]) -> nn.Module | None:
    """The ``nn.Module`` for a stateful node, or None for a stateless one."""
    factory = _LAYERS.get(spec.op)
    return factory(spec, in_shape) if factory else None


# ------------------------------------------------ functions for stateless nodes

_Emit = Callable[[fx.Graph, list[fx.Node], Mapping[str, Any]], fx.Node]


def _call(fn: Callable[..., Any], **kwargs: Any) -> _Emit:
    def emit(graph: fx.Graph, args: list[fx.Node], attrs: Mapping[str, Any]) -> fx.Node:
        return graph.call_function(fn, (args[0],), dict(kwargs))

    return emit


def _pool(fn: Callable[..., Any]) -> _Emit:
    def emit(graph: fx.Graph, args: list[fx.Node], attrs: Mapping[str, Any]) -> fx.Node:
        kwargs = {
            "kernel_size": attrs["kernel_size"],
            "stride": attrs["stride"] or attrs["kernel_size"],
            "padding": attrs["padding"],
        }
        return graph.call_function(fn, (args[0],), kwargs)

    return emit


def _add(graph: fx.Graph, args: list[fx.Node], attrs: Mapping[str, Any]) -> fx.Node:
    total = args[0]
    for arg in args[1:]:
        total = graph.call_function(operator.add, (total, arg))
    return total


def _concat(graph: fx.Graph, args: list[fx.Node], attrs: Mapping[str, Any]) -> fx.Node:
    return graph.call_function(torch.cat, (tuple(args),), {"dim": 1})


_FUNCTIONS: dict[str, _Emit] = {
    # Emitted as torch.clamp itself (not via relu()) to save a Python frame per call.
    "relu": _call(torch.clamp, min=0.0),
    "tanh": _call(torch.tanh),
    "gelu": _call(F.gelu),
    "selu": _call(F.selu),
    "flatten": _call(torch.flatten, start_dim=1),
    "maxpool": _pool(F.max_pool2d),
    "avgpool": _pool(F.avg_pool2d),
    "global_avgpool": _call(torch.mean, dim=(2, 3)),
    "add": _add,
    "concat": _concat,
}
_PASS_THROUGH = frozenset({"identity", "output"})


# ------------------------------------------------------------------ compile


def _build_layers(arch: Architecture) -> nn.ModuleDict:
    layers = nn.ModuleDict()
    for node in arch.nodes:
        ins = arch.inputs(node)
        layer = make_layer(arch.spec(node), arch.shape(ins[0]) if ins else ())
        if layer is not None:
            layers[node] = layer
    return layers


def _build_graph(arch: Architecture) -> fx.Graph:
    graph = fx.Graph()
    values: dict[str, fx.Node] = {}
    for node in arch.nodes:
        spec = arch.spec(node)
        args = [values[src] for src in arch.inputs(node)]
        if spec.op == "input":
            values[node] = graph.placeholder("x")
        elif spec.op in _PASS_THROUGH:
            values[node] = args[0]
        elif spec.op in _LAYERS:
            values[node] = graph.call_module(f"layers.{node}", (args[0],))
        else:
            values[node] = _FUNCTIONS[spec.op](graph, args, spec.attrs)
    graph.output(values[arch.output_node])
    return graph


def compile_module(
    arch: Architecture,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> fx.GraphModule:
    """Compile ``arch`` into a GraphModule carrying its weights.

    Args:
        arch: the architecture.
        device: where the module lives (default CPU).
        dtype: float dtype of the module (default: the architecture's).

    Returns:
        A ``torch.fx.GraphModule``; its ``layers`` ModuleDict is keyed by node name.
    """
    root = nn.Module()
    root.layers = _build_layers(arch)
    module = fx.GraphModule(root, _build_graph(arch), class_name="CompiledArchitecture")
    # fx copies submodules into plain Modules; keep the ModuleDict so module.layers[node]
    # and iteration work (the generated code uses attribute access, which both support).
    module.layers = root.layers
    # GraphModule wraps __call__ only to decorate tracebacks; the plain Module call is
    # measurably cheaper per step for small networks (bench/compile_overhead.py).
    type(module).__call__ = nn.Module.__call__  # type: ignore[method-assign]
    # Cast before loading: load_state_dict copies into the existing (float32) parameters,
    # which would round float64 weights.
    module.to(dtype=arch.dtype)
    _load_weights(module, arch)
    return module.to(device=device, dtype=dtype or arch.dtype)


def _load_weights(module: fx.GraphModule, arch: Architecture) -> None:
    state = {
        f"layers.{node}.{pname}": tensor
        for node, params in arch.weights.items()
        for pname, tensor in params.items()
    }
    module.load_state_dict(state, strict=True)


def weights_from_module(arch: Architecture, module: nn.Module) -> dict[str, dict[str, Any]]:
    """Read ``{node: {param: tensor}}`` back from a module compiled from ``arch``.

    Raises:
        WeightsError: the module does not have ``arch``'s layers.
    """
    state = module.state_dict()
    out: dict[str, dict[str, Any]] = {}
    for node in arch.nodes:
        specs = arch.param_specs(node)
        if not specs:
            continue
        try:
            out[node] = {p: state[f"layers.{node}.{p}"].detach().cpu().clone() for p in specs}
        except KeyError as exc:
            raise WeightsError(
                f"module has no parameter {exc.args[0]!r}; was it compiled from this architecture?"
            ) from None
    return out


def init_weights(
    arch: Architecture, *, seed: int = 0, dtype: torch.dtype = torch.float32
) -> dict[str, dict[str, torch.Tensor]]:
    """Initialise every parametric node as PyTorch would, deterministically from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = _build_layers(arch)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for node, layer in layers.items():
        state = layer.state_dict()
        if state:
            out[node] = {
                k: (t.to(dtype) if t.is_floating_point() else t) for k, t in state.items()
            }
    return out
