"""How each traced PyTorch call becomes IR nodes: the rule tables of :mod:`fx_import`.

A rule gets the converter (:class:`Context`), the ``torch.fx`` node and, for a
``call_module`` node, the submodule, and returns what the node's value is in the IR: a
:class:`Value` (an IR node's output; a rule may return its input's value when the call
is a no-op in the IR, such as ``nn.Identity`` or a flatten of a vector), or a plain
Python value for the small integer bookkeeping of ``x.view(x.size(0), -1)``.

A rule refuses what the IR cannot express by raising :class:`Refusal` with the reason
and the fix; the converter adds the node, the call and the code location.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from morphsearch.arch._fx_values import (
    Batch,
    Context,
    Refusal,
    Rule,
    Sizes,
    Value,
    arg,
    per_dim,
    require,
)

__all__ = [
    "FUNCTION_NAMES",
    "FUNCTION_RULES",
    "METHOD_RULES",
    "MODULE_RULES",
    "Batch",
    "Context",
    "Refusal",
    "Rule",
    "Sizes",
    "Value",
    "supported",
]


# --------------------------------------------------------------- layers


def _weights(module: nn.Module, names: Sequence[str]) -> dict[str, torch.Tensor]:
    found = {name: getattr(module, name) for name in names}
    return {name: t.detach() for name, t in found.items() if t is not None}


def _linear(ctx: Context, node: fx.Node, m: nn.Linear) -> Value:
    attrs = {"out_features": m.out_features, "bias": m.bias is not None}
    return ctx.emit("linear", [ctx.tensor(node.args[0])], attrs, _weights(m, ["weight", "bias"]))


def _conv_padding(m: nn.Conv1d | nn.Conv2d) -> Any:
    if m.padding == "valid":
        return 0
    if m.padding == "same":
        require(all(k % 2 == 1 for k in m.kernel_size),
                 "padding='same' with an even kernel pads unevenly; give explicit padding")
        return [(k - 1) // 2 for k in m.kernel_size]
    return m.padding


def _conv(ctx: Context, node: fx.Node, m: nn.Conv1d | nn.Conv2d) -> Value:
    require(m.groups == 1, f"groups={m.groups} is not supported (the IR's convolutions "
                            "are dense); use groups=1")
    require(all(d == 1 for d in m.dilation),
             f"dilation={tuple(m.dilation)} is not supported; use dilation=1")
    require(m.padding_mode == "zeros",
             f"padding_mode={m.padding_mode!r} is not supported; use 'zeros'")
    op = "conv1d" if isinstance(m, nn.Conv1d) else "conv2d"
    attrs = {
        "out_channels": m.out_channels,
        "kernel_size": per_dim(m.kernel_size),
        "stride": per_dim(m.stride),
        "padding": per_dim(_conv_padding(m)),
        "bias": m.bias is not None,
    }
    return ctx.emit(op, [ctx.tensor(node.args[0])], attrs, _weights(m, ["weight", "bias"]))


def _batchnorm(ctx: Context, node: fx.Node, m: nn.BatchNorm1d | nn.BatchNorm2d) -> Value:
    require(m.affine, "affine=False is not supported; the IR's batchnorm has a scale and "
                       "a shift (use affine=True)")
    require(m.track_running_stats, "track_running_stats=False is not supported (the IR's "
                                    "batchnorm keeps running statistics)")
    require(m.momentum is not None, "momentum=None (a cumulative average) is not "
                                     "supported; give a momentum, e.g. 0.1")
    names = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    attrs = {"eps": float(m.eps), "momentum": float(m.momentum)}  # type: ignore[arg-type]
    return ctx.emit("batchnorm", [ctx.tensor(node.args[0])], attrs, _weights(m, names))


def _layernorm(ctx: Context, node: fx.Node, m: nn.LayerNorm) -> Value:
    x = ctx.tensor(node.args[0])
    features = ctx.shape(node.args[0])[1:]
    require(tuple(m.normalized_shape) == features,
             f"normalized_shape {list(m.normalized_shape)} is not the whole sample "
             f"{list(features)}; the IR's layernorm normalises over every non-batch dim")
    require(m.weight is not None and m.bias is not None,
             "elementwise_affine=False or bias=False is not supported")
    return ctx.emit("layernorm", [x], {"eps": float(m.eps)}, _weights(m, ["weight", "bias"]))


def _dropout(ctx: Context, node: fx.Node, m: nn.Dropout) -> Value:
    return ctx.emit("dropout", [ctx.tensor(node.args[0])], {"p": float(m.p)})


def _identity(ctx: Context, node: fx.Node, m: Any) -> Any:
    return ctx.resolve(node.args[0])


# ---------------------------------------------------------- activations


def _activation(op: str) -> Rule:
    def rule(ctx: Context, node: fx.Node, m: Any) -> Value:
        return ctx.emit(op, [ctx.tensor(node.args[0])])

    return rule


def _gelu_module(ctx: Context, node: fx.Node, m: nn.GELU) -> Value:
    require(m.approximate == "none", "approximate='tanh' is not supported; the IR's gelu "
                                      "is the exact one (approximate='none')")
    return ctx.emit("gelu", [ctx.tensor(node.args[0])])


def _gelu_function(ctx: Context, node: fx.Node, m: Any) -> Value:
    require(node.kwargs.get("approximate", "none") == "none",
             "approximate='tanh' is not supported; the IR's gelu is the exact one")
    return ctx.emit("gelu", [ctx.tensor(node.args[0])])


# -------------------------------------------------------------- pooling


def _pool_attrs(kernel: Any, stride: Any, padding: Any) -> dict[str, Any]:
    return {
        "kernel_size": per_dim(kernel),
        "stride": None if stride is None else per_dim(stride),
        "padding": per_dim(padding),
    }


def _maxpool(ctx: Context, node: fx.Node, m: nn.MaxPool1d | nn.MaxPool2d) -> Value:
    dilation = m.dilation if isinstance(m.dilation, Sequence) else [m.dilation]
    require(all(d == 1 for d in dilation), f"dilation={m.dilation} is not supported")
    require(not m.ceil_mode, "ceil_mode=True is not supported; use ceil_mode=False")
    require(not m.return_indices, "return_indices=True is not supported")
    attrs = _pool_attrs(m.kernel_size, m.stride, m.padding)
    return ctx.emit("maxpool", [ctx.tensor(node.args[0])], attrs)


def _avgpool(ctx: Context, node: fx.Node, m: nn.AvgPool1d | nn.AvgPool2d) -> Value:
    require(not m.ceil_mode, "ceil_mode=True is not supported; use ceil_mode=False")
    require(bool(m.count_include_pad), "count_include_pad=False is not supported")
    require(getattr(m, "divisor_override", None) is None, "divisor_override is not supported")
    attrs = _pool_attrs(m.kernel_size, m.stride, m.padding)
    return ctx.emit("avgpool", [ctx.tensor(node.args[0])], attrs)


def _adaptive_avgpool(ctx: Context, node: fx.Node, m: Any) -> Value:
    size = m.output_size if isinstance(m.output_size, Sequence) else [m.output_size]
    require(all(s == 1 for s in size), f"output_size={m.output_size} is not supported; "
                                        "only pooling to 1 (the IR's global_avgpool)")
    value = ctx.emit("global_avgpool", [ctx.tensor(node.args[0])])
    return Value(value.name, squeezed=True)


def _mean(ctx: Context, node: fx.Node, m: Any) -> Value:
    """``x.mean((2, 3))``: a global average pool over every spatial dim."""
    rank = len(ctx.shape(node.args[0]))
    dims = ctx.resolve(arg(node, 1, "dim"))
    dims = [dims] if isinstance(dims, int) else list(dims or [])
    require(rank > 2 and sorted(d % rank for d in dims) == list(range(2, rank)),
             f"a mean over dims {dims} is not supported; only over every spatial dim "
             "(the IR's global_avgpool)")
    value = ctx.emit("global_avgpool", [ctx.tensor(node.args[0])])
    return Value(value.name, squeezed=bool(arg(node, 2, "keepdim", False)))


# ------------------------------------------------------ flatten and views


def _flatten_of(ctx: Context, arg: Any) -> Any:
    """The IR value of flattening ``arg`` (all but the batch dim): a no-op on a vector."""
    value = ctx.resolve(arg)
    if isinstance(value, Value) and value.squeezed:
        return Value(value.name)  # the pool already gave (C,): torch's flatten drops 1x1
    if len(ctx.shape(arg)) == 2:
        return ctx.tensor(arg)
    return ctx.emit("flatten", [ctx.tensor(arg)])


def _check_flatten_dims(start: Any, end: Any, rank: int) -> None:
    require(start == 1 and end % rank == rank - 1,
             f"flatten(start_dim={start}, end_dim={end}) is not supported; only "
             "flatten(1) (every dim but the batch)")


def _flatten_module(ctx: Context, node: fx.Node, m: nn.Flatten) -> Any:
    _check_flatten_dims(m.start_dim, m.end_dim, len(ctx.shape(node.args[0])))
    return _flatten_of(ctx, node.args[0])


def _flatten_call(ctx: Context, node: fx.Node, m: Any) -> Any:
    start = ctx.resolve(arg(node, 1, "start_dim", 0))
    end = ctx.resolve(arg(node, 2, "end_dim", -1))
    _check_flatten_dims(start, end, len(ctx.shape(node.args[0])))
    return _flatten_of(ctx, node.args[0])


def _view(ctx: Context, node: fx.Node, m: Any) -> Any:
    """``x.view(x.size(0), -1)``, ``x.reshape(-1, n)``: a flatten, or a no-op view."""
    dims = [ctx.resolve(a) for a in node.args[1:]] or [ctx.resolve(node.kwargs.get("shape"))]
    if len(dims) == 1 and isinstance(dims[0], list | tuple):
        dims = list(dims[0])
    keeps_batch = isinstance(dims[0], Batch) or (
        dims[0] == -1 and all(isinstance(d, int) and d > 0 for d in dims[1:]))
    require(keeps_batch, f"view/reshape to {_shown(dims)} is not supported: keep the "
                          "batch dim first, e.g. x.view(x.size(0), -1)")
    before, after = ctx.shape(node.args[0])[1:], ctx.shape(node)[1:]
    if after == before:
        return ctx.resolve(node.args[0])
    require(len(after) == 1, f"view/reshape {list(before)} -> {list(after)} is not "
                              "supported; only flattening each sample")
    return _flatten_of(ctx, node.args[0])


def _shown(dims: Sequence[Any]) -> str:
    return "(" + ", ".join("batch" if isinstance(d, Batch) else str(d) for d in dims) + ")"


def _size(ctx: Context, node: fx.Node, m: Any) -> Any:
    sizes = Sizes(ctx.shape(node.args[0]))
    dim = ctx.resolve(arg(node, 1, "dim"))
    return sizes if dim is None else _dim_of(sizes, dim)


def _dim_of(sizes: Sizes, index: Any) -> Any:
    require(isinstance(index, int), f"indexing a shape with {index!r} is not supported")
    return Batch() if index % len(sizes.shape) == 0 else sizes.shape[index]


def _getattr(ctx: Context, node: fx.Node, m: Any) -> Any:
    require(node.args[1] == "shape", f"reading attribute {node.args[1]!r} of a tensor is "
                                      "not supported")
    return Sizes(ctx.shape(node.args[0]))


def _getitem(ctx: Context, node: fx.Node, m: Any) -> Any:
    seq, index = ctx.resolve(node.args[0]), ctx.resolve(node.args[1])
    require(isinstance(seq, Sizes), "indexing or slicing a tensor is not supported")
    return _dim_of(seq, index)


# -------------------------------------------------------- joining paths


def _add(ctx: Context, node: fx.Node, m: Any) -> Any:
    a, b = ctx.resolve(node.args[0]), ctx.resolve(node.args[1])
    if not isinstance(a, Value | Batch) and not isinstance(b, Value | Batch):
        return operator.add(a, b)  # integer bookkeeping (x.size(1) + 1)
    require(ctx.resolve(node.kwargs.get("alpha", 1)) == 1, "add with alpha is not supported")
    require(isinstance(a, Value) and isinstance(b, Value),
             "adding a constant is not supported; the IR's add sums tensors of one shape")
    require(ctx.shape(node.args[0]) == ctx.shape(node.args[1]),
             f"adding shapes {list(ctx.shape(node.args[0]))} and "
             f"{list(ctx.shape(node.args[1]))} broadcasts; the IR's add needs one shape")
    return ctx.emit("add", [ctx.tensor(node.args[0]), ctx.tensor(node.args[1])])


def _cat(ctx: Context, node: fx.Node, m: Any) -> Value:
    parts = list(arg(node, 0, "tensors", []))
    dim = ctx.resolve(arg(node, 1, "dim", 0))
    rank = len(ctx.shape(parts[0]))
    require(isinstance(dim, int) and dim % rank == 1,
             f"cat along dim {dim} is not supported; only along channels/features (dim=1)")
    if len(parts) == 1:
        return ctx.tensor(parts[0])
    return ctx.emit("concat", [ctx.tensor(p) for p in parts])


def _arithmetic(fn: Callable[[Any, Any], Any]) -> Rule:
    """``x.size(1) * 2`` and the like: plain integers, never tensors."""

    def rule(ctx: Context, node: fx.Node, m: Any) -> Any:
        a, b = ctx.resolve(node.args[0]), ctx.resolve(node.args[1])
        require(not isinstance(a, Value | Batch | Sizes) and
                 not isinstance(b, Value | Batch | Sizes),
                 "arithmetic on tensors or on the batch size is not supported")
        return fn(a, b)

    return rule


def _assert(ctx: Context, node: fx.Node, m: Any) -> None:
    """The guard torch.fx adds for a forward argument fixed to its default."""
    require(ctx.resolve(node.args[0]) is True, "a traced assertion fails on the example")


# ----------------------------------------------------------------- tables

MODULE_RULES: dict[type, Rule] = {
    nn.Linear: _linear,
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.BatchNorm1d: _batchnorm,
    nn.BatchNorm2d: _batchnorm,
    nn.LayerNorm: _layernorm,
    nn.ReLU: _activation("relu"),
    nn.Tanh: _activation("tanh"),
    nn.SELU: _activation("selu"),
    nn.GELU: _gelu_module,
    nn.Identity: _identity,
    nn.Dropout: _dropout,
    nn.MaxPool1d: _maxpool,
    nn.MaxPool2d: _maxpool,
    nn.AvgPool1d: _avgpool,
    nn.AvgPool2d: _avgpool,
    nn.AdaptiveAvgPool1d: _adaptive_avgpool,
    nn.AdaptiveAvgPool2d: _adaptive_avgpool,
    nn.Flatten: _flatten_module,
}

# the functions, with the names a user writes them by
_FUNCTIONS: dict[str, tuple[Callable[..., Any], Rule]] = {
    "F.relu": (F.relu, _activation("relu")),
    "torch.relu": (torch.relu, _activation("relu")),
    "torch.tanh": (torch.tanh, _activation("tanh")),
    "F.selu": (F.selu, _activation("selu")),
    "torch.selu": (torch.selu, _activation("selu")),
    "F.gelu": (F.gelu, _gelu_function),
    "torch.flatten": (torch.flatten, _flatten_call),
    "torch.reshape": (torch.reshape, _view),
    "torch.mean": (torch.mean, _mean),
    "torch.add": (torch.add, _add),
    "+": (operator.add, _add),
    "+=": (operator.iadd, _add),
    "torch.cat": (torch.cat, _cat),
    "torch.concat": (torch.concat, _cat),
    "*": (operator.mul, _arithmetic(operator.mul)),
    "//": (operator.floordiv, _arithmetic(operator.floordiv)),
    "-": (operator.sub, _arithmetic(operator.sub)),
    "==": (operator.eq, _arithmetic(operator.eq)),
    "getattr": (getattr, _getattr),
    "[]": (operator.getitem, _getitem),
    "torch._assert": (torch._assert, _assert),
}
FUNCTION_RULES: dict[Callable[..., Any], Rule] = {fn: rule for fn, rule in _FUNCTIONS.values()}
FUNCTION_NAMES: dict[Callable[..., Any], str] = {fn: name for name, (fn, _) in _FUNCTIONS.items()}

METHOD_RULES: dict[str, Rule] = {
    "relu": _activation("relu"),
    "tanh": _activation("tanh"),
    "flatten": _flatten_call,
    "view": _view,
    "reshape": _view,
    "size": _size,
    "mean": _mean,
    "add": _add,
}

_BOOKKEEPING = frozenset({"*", "//", "-", "==", "getattr", "[]", "torch._assert"})


def supported() -> str:
    """The supported calls, for refusal messages."""
    modules = ", ".join(f"nn.{cls.__name__}" for cls in MODULE_RULES)
    functions = ", ".join(n for n in _FUNCTIONS if n not in _BOOKKEEPING)
    methods = ", ".join(f".{name}()" for name in METHOD_RULES)
    return f"supported: {modules}; {functions}; {methods}"
