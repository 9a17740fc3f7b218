"""The op vocabulary: ``OPS``, the one place that knows an op.

Each op is an :class:`OpDef`: its attributes and arity, its shape rule, parameters and
FLOPs (``_rules.py``, no torch), how it runs in PyTorch (module, functional form or
generated code: ``_lowering.py``), and the facts the morphisms ask about it (width
attribute, spatial rank, slope at zero, ...). Code elsewhere asks the table
(``OPS[op].is_layer``, ``OPS[op].width_attr``) and never dispatches on op names.

Shapes never include the batch dimension: a vector is ``(features,)``, a signal
``(channels, length)`` and an image ``(channels, height, width)``.

Adding an op: write its shape rule (and params/FLOPs if it has any) in ``_rules.py``,
its module + functional form (stateful) or code expression (stateless) in
``_lowering.py``, and one ``OpDef`` entry in ``OPS`` below. The parametrised test
``tests/arch/test_ops_table.py`` then checks it end to end (shape, parameter count,
module vs generated code vs ``evaluate``, JSON round trip). Morphisms pick it up through
the fields: a units layer (``width_attr``) is widenable, an ``elementwise`` op lies on
widening paths, an ``activation`` is a deepening site, ``slope_at_zero`` enables
GradMax's closed form.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from morphsearch.arch import _lowering as low
from morphsearch.arch import _rules as rules
from morphsearch.arch._rules import (
    OpError,
    ParamSpec,
    Shape,
    dims,
    is_nonneg,
    is_pos,
    per_dim,
)

__all__ = [
    "ACTIVATIONS",
    "OPS",
    "PARAMETRIC",
    "AttrDef",
    "OpDef",
    "OpError",
    "ParamSpec",
    "Shape",
    "dims",
    "layer_op_for",
    "resolve_attrs",
]

_REQUIRED = object()


@dataclass(frozen=True)
class AttrDef:
    """One attribute: accepted types, default, a check, the hint an error shows, and the
    canonical form of a valid value (one spelling per meaning, so one structure hash)."""

    kind: type | tuple[type, ...]
    default: Any = _REQUIRED
    check: Callable[[Any], bool] = lambda value: True
    hint: str = ""
    canonical: Callable[[Any], Any] = lambda value: value

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


def _no_params(attrs: Mapping[str, Any], ins: Sequence[Shape]) -> dict[str, ParamSpec]:
    return {}


@dataclass(frozen=True)
class OpDef:
    """Everything known about one op.

    Graph: ``infer`` (attrs, input shapes -> output shape; raises :class:`OpError`),
    ``attrs``, ``min_inputs``/``max_inputs``, ``params`` (attrs, input shapes -> specs),
    ``flops`` (attrs, input shapes, output shape -> FLOPs of one sample).

    PyTorch: ``module`` (attrs, input shape, initialise -> ``nn.Module``) with
    ``functional`` (attrs, weights, train, output shape -> fn) for stateful nodes;
    ``code`` (input variable names, attrs, input shape -> expression) for stateless
    ones; neither for ``identity``/``output`` (the value passes through) and ``input``.
    ``stochastic``: draws from the RNG in train mode (dropout).

    Morphisms: ``width_attr`` names the attribute counting a units layer's output units
    (``out_features``/``out_channels``; None: not a units layer); ``spatial_rank`` of a
    units layer (0 linear, 1 conv1d, 2 conv2d); ``elementwise``: acts on each unit (channel)
    independently, so widening passes through it; ``activation``: a nonlinearity
    ``f`` with ``f(0) = 0``; ``slope_at_zero``: its exact autograd derivative at 0 where
    known; ``idempotent``: ``f(f(z)) = f(z)``; ``parametric``: has trainable weights;
    ``batch_statistics``: in train mode the output depends on the whole batch.

    Pictures: ``colour`` and ``label`` (attrs -> short text) for :mod:`morphsearch.viz`.
    """

    name: str
    infer: Callable[[Mapping[str, Any], Sequence[Shape]], Shape]
    attrs: Mapping[str, AttrDef] = field(default_factory=dict)
    min_inputs: int = 1
    max_inputs: int | None = 1
    params: Callable[[Mapping[str, Any], Sequence[Shape]], dict[str, ParamSpec]] = _no_params
    flops: Callable[[Mapping[str, Any], Sequence[Shape], Shape], int] = lambda a, i, o: 0
    module: low.ModuleFactory | None = None
    functional: low.Functional | None = None
    code: low.Code | None = None
    stochastic: bool = False
    width_attr: str | None = None
    spatial_rank: int | None = None
    elementwise: bool = False
    activation: bool = False
    slope_at_zero: float | None = None
    idempotent: bool = False
    parametric: bool = False
    batch_statistics: bool = False
    colour: str | None = None
    label: Callable[[Mapping[str, Any]], str] | None = None

    @property
    def is_layer(self) -> bool:
        """A units layer (linear, conv): it has weights and a width to grow."""
        return self.width_attr is not None

    @property
    def has_module(self) -> bool:
        """Compiled as an ``nn.Module`` (``layers.<node>``), not as inline code."""
        return self.module is not None


# ----------------------------------------------------------------- the table

_BIAS = AttrDef(bool, True)
_POS = AttrDef(int, _REQUIRED, is_pos, "a positive int")
_EPS = AttrDef((int, float), 1e-5, lambda v: v > 0, "a small positive float")
_LAYER_COLOUR, _NORM_COLOUR, _JOIN_COLOUR = "#8ecae6", "#ffb703", "#fb8500"
_ACTIVATION_COLOUR = "#b7e4c7"


def _shape_attr(value: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) in (1, 2, 3) and all(map(is_pos, value))


def _one_if_equal(value: Any) -> Any:
    """``[3, 3]`` is ``3`` (an int means every dimension): one spelling, one hash. Only
    for ops of a fixed rank: a rank-generic pool keeps ``[2, 2]``, so that on a signal it
    is refused rather than read as ``2``."""
    if isinstance(value, list | tuple) and len(set(value)) == 1:
        return value[0]
    return value


def _spatial_attr(lengths: tuple[int, ...], check: Callable[[Any], bool], default: Any,
                  hint: str, canonical: Callable[[Any], Any] = lambda value: value) -> AttrDef:
    """An int, or a list with one entry per spatial dimension (``lengths``: allowed list
    lengths; none for an int-only attribute)."""
    return AttrDef((int, list, tuple), default, per_dim(check, lengths), hint, canonical)


def _pool_stride() -> AttrDef:
    check = per_dim(is_pos, (1, 2))
    return AttrDef((int, list, tuple, type(None)), None, lambda v: v is None or check(v),
                   "None (= kernel_size), a positive int or list")


def _conv(rank: int) -> OpDef:
    per = (rank,) if rank > 1 else ()
    lists = f" or a list of {rank}" if rank > 1 else ""
    return OpDef(
        f"conv{rank}d",
        rules.conv(rank),
        {
            "out_channels": _POS,
            "kernel_size": _spatial_attr(per, is_pos, _REQUIRED, f"a positive int{lists}",
                                         _one_if_equal),
            "stride": _spatial_attr(per, is_pos, 1, f"a positive int{lists}", _one_if_equal),
            "padding": _spatial_attr(per, is_nonneg, 0, f"a non-negative int{lists}",
                                     _one_if_equal),
            "bias": _BIAS,
        },
        params=rules.conv_params,
        flops=rules.conv_flops,
        module=low.conv_module(rank),
        functional=low.conv_fn(rank),
        width_attr="out_channels",
        spatial_rank=rank,
        parametric=True,
        colour="#219ebc",
        label=lambda a: f"conv{rank}d {a['out_channels']} "
                      f"k{rules.show(rules.dims(a['kernel_size'], rank))}",
    )


def _activation(name: str, code: low.Code | None, flops_per_unit: int, slope: float | None,
                idempotent: bool = False) -> OpDef:
    return OpDef(name, rules.same, flops=rules.per_output(flops_per_unit), code=code,
                 elementwise=True, activation=True, slope_at_zero=slope,
                 idempotent=idempotent, colour=_ACTIVATION_COLOUR)


def _pool(kind: str) -> OpDef:
    return OpDef(
        f"{kind}pool",
        rules.pool,
        {
            "kernel_size": _spatial_attr((1, 2), is_pos, _REQUIRED, "a positive int or list"),
            "stride": _pool_stride(),
            "padding": _spatial_attr((1, 2), is_nonneg, 0, "a non-negative int or list"),
        },
        flops=rules.pool_flops,
        code=low.pool_code(kind),
        elementwise=True,
    )


OPS: dict[str, OpDef] = {
    op.name: op
    for op in [
        OpDef("input", rules.input_shape,
              {"shape": AttrDef((list, tuple), _REQUIRED, _shape_attr,
                                "e.g. [64], [1, 40] or [1, 8, 8]")},
              min_inputs=0, max_inputs=0, colour="#d9d9d9"),
        OpDef("output", rules.same, colour="#d9d9d9"),
        OpDef(
            "linear",
            rules.linear,
            {"out_features": _POS, "bias": _BIAS},
            params=rules.linear_params,
            flops=rules.linear_flops,
            module=low.linear_module,
            functional=low.linear_fn,
            width_attr="out_features",
            spatial_rank=0,
            parametric=True,
            colour=_LAYER_COLOUR,
            label=lambda a: f"linear {a['out_features']}",
        ),
        _conv(1),
        _conv(2),
        OpDef(
            "batchnorm",
            rules.batchnorm,
            {"eps": _EPS,
             "momentum": AttrDef((int, float), 0.1, lambda v: 0 < v <= 1, "in (0, 1]")},
            params=rules.bn_params,
            flops=rules.per_output(2),
            module=low.batchnorm_module,
            functional=low.batchnorm_fn,
            elementwise=True,
            parametric=True,
            batch_statistics=True,
            colour=_NORM_COLOUR,
        ),
        OpDef("layernorm", rules.same, {"eps": _EPS}, params=rules.ln_params,
              flops=rules.per_output(5), module=low.layernorm_module,
              functional=low.layernorm_fn, parametric=True, colour=_NORM_COLOUR),
        # The IR's relu is clamp(min=0): derivative 1 at 0 (see arch/compile.py); gelu'(0)
        # = Phi(0) = 1/2; selu has a kink at 0 (no single slope).
        _activation("relu", low.relu_code, 1, 1.0, idempotent=True),
        _activation("tanh", low.call("torch.tanh"), 4, 1.0),
        _activation("gelu", low.call("F.gelu"), 8, 0.5),
        _activation("selu", low.call("F.selu"), 4, None),
        _activation("identity", None, 0, 1.0),  # no code: the value passes through
        OpDef("dropout", rules.same,
              {"p": AttrDef((int, float), 0.5, lambda v: 0 <= v < 1, "in [0, 1)")},
              module=low.dropout_module, functional=low.dropout_fn, stochastic=True,
              elementwise=True),
        OpDef("add", rules.add, min_inputs=2, max_inputs=None, flops=rules.add_flops,
              code=low.add_code, colour=_JOIN_COLOUR),
        OpDef("concat", rules.concat, min_inputs=2, max_inputs=None, code=low.concat_code,
              colour=_JOIN_COLOUR),
        OpDef("flatten", rules.flatten, code=low.flatten_code),
        _pool("max"),
        _pool("avg"),
        OpDef("global_avgpool", rules.global_pool, flops=rules.global_pool_flops,
              code=low.global_avgpool_code, elementwise=True),
    ]
}

ACTIVATIONS = frozenset(name for name, op in OPS.items() if op.activation)
PARAMETRIC = frozenset(name for name, op in OPS.items() if op.parametric)


def layer_op_for(shape: Sequence[int]) -> str:
    """The units layer that maps a ``shape`` input to the same layout: ``linear`` for a
    vector, ``conv1d`` for a signal, ``conv2d`` for an image.

    Raises:
        OpError: no units layer takes inputs of that rank.
    """
    for name, op in OPS.items():
        if op.is_layer and op.spatial_rank == len(shape) - 1:
            return name
    raise OpError(f"no layer takes inputs of shape {list(shape)}")


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
        value = adef.canonical(value)
        resolved[name] = list(value) if isinstance(value, tuple) else value
    return resolved


def _kinds(adef: AttrDef) -> tuple[type, ...]:
    return adef.kind if isinstance(adef.kind, tuple) else (adef.kind,)
