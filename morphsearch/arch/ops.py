"""The op vocabulary: for each op, its attributes, arity, shape rule, parameters and FLOPs.

Shapes never include the batch dimension: a vector is ``(features,)`` and an image
is ``(channels, height, width)``. Each op is an :class:`OpDef` registered in ``OPS``;
nothing dispatches on op names with ``if``/``elif`` outside this table and the
compiler's table.

FLOPs count one forward pass of one sample, a multiply-add being 2 FLOPs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Shape = tuple[int, ...]

_REQUIRED = object()


class OpError(ValueError):
    """Raised by shape rules; the graph validator adds the node name and re-raises."""


@dataclass(frozen=True)
class AttrDef:
    kind: type | tuple[type, ...]
    default: Any = _REQUIRED
    check: Callable[[Any], bool] = lambda value: True
    hint: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


@dataclass(frozen=True)
class ParamSpec:
    shape: Shape
    trainable: bool = True
    integer: bool = False  # num_batches_tracked is an int64 counter


@dataclass(frozen=True)
class OpDef:
    name: str
    infer: Callable[[Mapping[str, Any], Sequence[Shape]], Shape]
    attrs: Mapping[str, AttrDef] = field(default_factory=dict)
    min_inputs: int = 1
    max_inputs: int | None = 1
    params: Callable[[Mapping[str, Any], Sequence[Shape]], dict[str, ParamSpec]] = (
        lambda attrs, ins: {}
    )
    flops: Callable[[Mapping[str, Any], Sequence[Shape], Shape], int] = lambda a, i, o: 0
    elementwise: bool = False  # acts on each unit independently (keeps widths aligned)


def _pos(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _nonneg(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _numel(shape: Shape) -> int:
    return math.prod(shape)


def _need_rank(ins: Sequence[Shape], ranks: tuple[int, ...], what: str) -> Shape:
    shape = ins[0]
    if len(shape) not in ranks:
        raise OpError(f"input has shape {list(shape)} but {what}")
    return shape


# ---------------------------------------------------------------- shape rules


def _input_shape(attrs: Mapping[str, Any], ins: Sequence[Shape]) -> Shape:
    return tuple(attrs["shape"])


def _same(attrs: Mapping[str, Any], ins: Sequence[Shape]) -> Shape:
    return ins[0]


def _linear(attrs: Mapping[str, Any], ins: Sequence[Shape]) -> Shape:
    _need_rank(ins, (1,), "linear needs a vector; insert a flatten node before it")
    return (attrs["out_features"],)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _conv2d(attrs: Mapping[str, Any], ins: Sequence[Shape]) -> Shape:
    _, h, w = _need_rank(ins, (3,), "conv2d needs a (channels, height, width) image")
    k, s, p = attrs["kernel_size"], attrs["stride"], attrs["padding"]
    oh, ow = _conv_out(h, k, s, p), _conv_out(w, k, s, p)
    if oh < 1 or ow < 1:
        raise OpError(f"kernel {k} with padding {p} does not fit the {h}x{w} input")
    return (attrs["out_channels"], oh, ow)


def _norm_input(attrs: Mapping[str, Any], ins: Sequence[Shape]) -> Shape:
    return _need_rank(ins, (1, 3), "batchnorm needs a vector or an image")


def _pool(attrs: Mapping[str, Any], ins: Sequence[Shape]) -> Shape:
    c, h, w = _need_rank(ins, (3,), "pooling needs a (channels, height, width) image")
    k, p = attrs["kernel_size"], attrs["padding"]
    s = attrs["stride"] or k
    if 2 * p > k:
        raise OpError(f"padding {p} must be at most half of kernel_size {k}")
    oh, ow = _conv_out(h, k, s, p), _conv_out(w, k, s, p)
    if oh < 1 or ow < 1:
        raise OpError(f"pool kernel {k} does not fit the {h}x{w} input")
    return (c, oh, ow)


def _global_pool(attrs: Mapping[str, Any], ins: Sequence[Shape]) -> Shape:
    return (_need_rank(ins, (3,), "global_avgpool needs a (channels, height, width) image")[0],)


def _flatten(attrs: Mapping[str, Any], ins: Sequence[Shape]) -> Shape:
    return (_numel(ins[0]),)


def _add(attrs: Mapping[str, Any], ins: Sequence[Shape]) -> Shape:
    if any(shape != ins[0] for shape in ins):
        raise OpError(
            f"add needs inputs of one shape, got {[list(s) for s in ins]}; "
            "make the branches' widths match"
        )
    return ins[0]


def _concat(attrs: Mapping[str, Any], ins: Sequence[Shape]) -> Shape:
    rest = {shape[1:] for shape in ins}
    if len({len(s) for s in ins}) != 1 or len(rest) != 1:
        raise OpError(
            f"concat joins along channels and needs the other dims equal, "
            f"got {[list(s) for s in ins]}"
        )
    return (sum(shape[0] for shape in ins), *ins[0][1:])


# ----------------------------------------------------------- params and FLOPs


def _linear_params(attrs: Mapping[str, Any], ins: Sequence[Shape]) -> dict[str, ParamSpec]:
    specs = {"weight": ParamSpec((attrs["out_features"], ins[0][0]))}
    if attrs["bias"]:
        specs["bias"] = ParamSpec((attrs["out_features"],))
    return specs


def _conv_params(attrs: Mapping[str, Any], ins: Sequence[Shape]) -> dict[str, ParamSpec]:
    k = attrs["kernel_size"]
    specs = {"weight": ParamSpec((attrs["out_channels"], ins[0][0], k, k))}
    if attrs["bias"]:
        specs["bias"] = ParamSpec((attrs["out_channels"],))
    return specs


def _bn_params(attrs: Mapping[str, Any], ins: Sequence[Shape]) -> dict[str, ParamSpec]:
    c = (ins[0][0],)
    return {
        "weight": ParamSpec(c),
        "bias": ParamSpec(c),
        "running_mean": ParamSpec(c, trainable=False),
        "running_var": ParamSpec(c, trainable=False),
        "num_batches_tracked": ParamSpec((), trainable=False, integer=True),
    }


def _ln_params(attrs: Mapping[str, Any], ins: Sequence[Shape]) -> dict[str, ParamSpec]:
    return {"weight": ParamSpec(ins[0]), "bias": ParamSpec(ins[0])}


def _linear_flops(attrs: Mapping[str, Any], ins: Sequence[Shape], out: Shape) -> int:
    return 2 * ins[0][0] * out[0] + (out[0] if attrs["bias"] else 0)


def _conv_flops(attrs: Mapping[str, Any], ins: Sequence[Shape], out: Shape) -> int:
    k = attrs["kernel_size"]
    per_output = 2 * ins[0][0] * k * k + (1 if attrs["bias"] else 0)
    return per_output * _numel(out)


def _per_output(n: int) -> Callable[[Mapping[str, Any], Sequence[Shape], Shape], int]:
    return lambda attrs, ins, out: n * _numel(out)


def _pool_flops(attrs: Mapping[str, Any], ins: Sequence[Shape], out: Shape) -> int:
    return attrs["kernel_size"] ** 2 * _numel(out)


def _add_flops(attrs: Mapping[str, Any], ins: Sequence[Shape], out: Shape) -> int:
    return (len(ins) - 1) * _numel(out)


def _global_pool_flops(attrs: Mapping[str, Any], ins: Sequence[Shape], out: Shape) -> int:
    return _numel(ins[0])


# ----------------------------------------------------------------- the table

_BIAS = AttrDef(bool, True)
_KERNEL = AttrDef(int, _REQUIRED, _pos, "a positive int, e.g. 3")
_PADDING = AttrDef(int, 0, _nonneg, "a non-negative int")
_EPS = AttrDef((int, float), 1e-5, lambda v: v > 0, "a small positive float")


def _shape_attr(value: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) in (1, 3) and all(map(_pos, value))


def _activation(name: str, flops_per_unit: int = 1) -> OpDef:
    return OpDef(name, _same, flops=_per_output(flops_per_unit), elementwise=True)


OPS: dict[str, OpDef] = {
    op.name: op
    for op in [
        OpDef(
            "input",
            _input_shape,
            {"shape": AttrDef((list, tuple), _REQUIRED, _shape_attr, "e.g. [64] or [1, 8, 8]")},
            min_inputs=0,
            max_inputs=0,
        ),
        OpDef("output", _same),
        OpDef(
            "linear",
            _linear,
            {"out_features": AttrDef(int, _REQUIRED, _pos, "a positive int"), "bias": _BIAS},
            params=_linear_params,
            flops=_linear_flops,
        ),
        OpDef(
            "conv2d",
            _conv2d,
            {
                "out_channels": AttrDef(int, _REQUIRED, _pos, "a positive int"),
                "kernel_size": _KERNEL,
                "stride": AttrDef(int, 1, _pos, "a positive int"),
                "padding": _PADDING,
                "bias": _BIAS,
            },
            params=_conv_params,
            flops=_conv_flops,
        ),
        OpDef(
            "batchnorm",
            _norm_input,
            {
                "eps": _EPS,
                "momentum": AttrDef((int, float), 0.1, lambda v: 0 < v <= 1, "in (0, 1]"),
            },
            params=_bn_params,
            flops=_per_output(2),
            elementwise=True,
        ),
        OpDef("layernorm", _same, {"eps": _EPS}, params=_ln_params, flops=_per_output(5)),
        _activation("relu"),
        _activation("tanh", 4),
        _activation("gelu", 8),
        _activation("selu", 4),
        _activation("identity", 0),
        OpDef(
            "dropout",
            _same,
            {"p": AttrDef((int, float), 0.5, lambda v: 0 <= v < 1, "in [0, 1)")},
            elementwise=True,
        ),
        OpDef("add", _add, min_inputs=2, max_inputs=None, flops=_add_flops),
        OpDef("concat", _concat, min_inputs=2, max_inputs=None),
        OpDef("flatten", _flatten),
        *(
            OpDef(
                name,
                _pool,
                {
                    "kernel_size": _KERNEL,
                    "stride": AttrDef((int, type(None)), None, lambda v: v is None or _pos(v)),
                    "padding": _PADDING,
                },
                flops=_pool_flops,
                elementwise=True,
            )
            for name in ("maxpool", "avgpool")
        ),
        OpDef("global_avgpool", _global_pool, flops=_global_pool_flops, elementwise=True),
    ]
}

ACTIVATIONS = frozenset({"relu", "tanh", "gelu", "selu", "identity"})
PARAMETRIC = frozenset({"linear", "conv2d", "batchnorm", "layernorm"})


def resolve_attrs(op: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``attrs`` against ``op``'s definition and fill in defaults.

    Raises:
        OpError: unknown op, unknown or missing attribute, or a value of the wrong kind.
    """
    opdef = OPS.get(op)
    if opdef is None:
        raise OpError(f"unknown op {op!r}; valid ops: {', '.join(sorted(OPS))}")
    unknown = sorted(set(attrs) - set(opdef.attrs))
    if unknown:
        valid = ", ".join(sorted(opdef.attrs)) or "none"
        raise OpError(f"{op} has no attribute {unknown[0]!r}; valid attributes: {valid}")
    resolved: dict[str, Any] = {}
    for name, adef in opdef.attrs.items():
        if name not in attrs:
            if adef.required:
                raise OpError(f"{op} is missing attribute {name!r} ({adef.hint})")
            resolved[name] = adef.default
            continue
        value = attrs[name]
        bad_kind = not isinstance(value, adef.kind) or (
            isinstance(value, bool) and adef.kind is not bool and bool not in _kinds(adef)
        )
        if bad_kind or not adef.check(value):
            hint = f" ({adef.hint})" if adef.hint else ""
            raise OpError(f"{op} attribute {name!r} has invalid value {value!r}{hint}")
        resolved[name] = list(value) if isinstance(value, tuple) else value
    return resolved


def _kinds(adef: AttrDef) -> tuple[type, ...]:
    return adef.kind if isinstance(adef.kind, tuple) else (adef.kind,)
