"""Shape rules, parameter specs and FLOP counts of the ops (no torch here).

Each function has the signature the :class:`~morphsearch.arch.ops.OpDef` field it fills
expects: ``infer(attrs, in_shapes) -> shape``, ``params(attrs, in_shapes) -> specs``,
``flops(attrs, in_shapes, out_shape) -> int``. Shapes never include the batch dimension.
Convolution and pooling are written once for any spatial rank (1-d on ``(C, L)``, 2-d on
``(C, H, W)``); per-dimension attributes are an int (every dimension) or a list.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Shape = tuple[int, ...]
Attrs = Mapping[str, Any]
Infer = Callable[[Attrs, Sequence[Shape]], Shape]
Flops = Callable[[Attrs, Sequence[Shape], Shape], int]

_LAYOUT = {1: "a (channels, length) signal", 2: "a (channels, height, width) image"}
_OTHER_CONV = {1: "; use conv2d on images", 2: "; use conv1d on signals"}


class OpError(ValueError):
    """Raised by shape rules; the graph validator adds the node name and re-raises."""


@dataclass(frozen=True)
class ParamSpec:
    shape: Shape
    trainable: bool = True
    integer: bool = False  # num_batches_tracked is an int64 counter


# ------------------------------------------------------------- attribute checks


def is_pos(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def is_nonneg(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def per_dim(check: Callable[[Any], bool], lengths: tuple[int, ...]) -> Callable[[Any], bool]:
    """An int passing ``check``, or a list of ``lengths`` such ints (one per dimension)."""

    def ok(value: Any) -> bool:
        if isinstance(value, list | tuple):
            return len(value) in lengths and all(map(check, value))
        return check(value)

    return ok


def dims(value: int | Sequence[int], rank: int) -> tuple[int, ...]:
    """A per-dimension attribute as a ``rank``-tuple (an int means every dimension)."""
    if isinstance(value, int):
        return (value,) * rank
    return tuple(value)


def show(values: tuple[int, ...]) -> str:
    """``5`` for one value, ``3x5`` for several: how an error names a kernel or a size."""
    return "x".join(map(str, values)) if len(set(values)) > 1 else str(values[0])


def _numel(shape: Shape) -> int:
    return math.prod(shape)


def _need_rank(ins: Sequence[Shape], ranks: tuple[int, ...], what: str) -> Shape:
    shape = ins[0]
    if len(shape) not in ranks:
        raise OpError(f"input has shape {list(shape)} but {what}")
    return shape


def _spatial_attrs(attrs: Attrs, rank: int, names: Sequence[str]) -> list[tuple[int, ...]]:
    out = []
    for name in names:
        value = attrs[name]
        if not isinstance(value, int) and len(value) != rank:
            raise OpError(
                f"{name} {list(value)} has {len(value)} entries but the input has {rank} "
                f"spatial dim(s); give an int or a list of {rank}"
            )
        out.append(dims(value, rank))
    return out


def _sliding_out(
    sizes: Sequence[int], kernel: tuple[int, ...], stride: tuple[int, ...],
    padding: tuple[int, ...], what: str,
) -> tuple[int, ...]:
    out = tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(sizes, kernel, stride, padding))
    if min(out) < 1:
        where = f"length-{sizes[0]}" if len(sizes) == 1 else "x".join(map(str, sizes))
        raise OpError(
            f"{what} {show(kernel)} with padding {show(padding)} does not fit the {where} "
            "input; lower kernel_size or raise padding"
        )
    return out


# ---------------------------------------------------------------- shape rules


def input_shape(attrs: Attrs, ins: Sequence[Shape]) -> Shape:
    return tuple(attrs["shape"])


def same(attrs: Attrs, ins: Sequence[Shape]) -> Shape:
    return ins[0]


def linear(attrs: Attrs, ins: Sequence[Shape]) -> Shape:
    _need_rank(ins, (1,), "linear needs a vector; insert a flatten node before it")
    return (attrs["out_features"],)


def conv(rank: int) -> Infer:
    """The shape rule of a ``rank``-d convolution."""

    def infer(attrs: Attrs, ins: Sequence[Shape]) -> Shape:
        shape = _need_rank(ins, (rank + 1,),
                           f"conv{rank}d needs {_LAYOUT[rank]}{_OTHER_CONV[rank]}")
        k, s, p = _spatial_attrs(attrs, rank, ("kernel_size", "stride", "padding"))
        return (attrs["out_channels"], *_sliding_out(shape[1:], k, s, p, "kernel"))

    return infer


def batchnorm(attrs: Attrs, ins: Sequence[Shape]) -> Shape:
    return _need_rank(ins, (1, 2, 3), "batchnorm needs a vector, a signal or an image")


def pool(attrs: Attrs, ins: Sequence[Shape]) -> Shape:
    """1-d pooling on ``(C, L)``, 2-d on ``(C, H, W)``; stride None means the kernel."""
    shape = _need_rank(ins, (2, 3), "pooling needs a (channels, length) signal or a "
                       "(channels, height, width) image")
    rank = len(shape) - 1
    k, p = _spatial_attrs(attrs, rank, ("kernel_size", "padding"))
    s = k if attrs["stride"] is None else _spatial_attrs(attrs, rank, ("stride",))[0]
    if any(2 * pi > ki for pi, ki in zip(p, k)):
        raise OpError(
            f"padding {show(p)} must be at most half of kernel_size {show(k)}; lower padding"
        )
    return (shape[0], *_sliding_out(shape[1:], k, s, p, "pool kernel"))


def global_pool(attrs: Attrs, ins: Sequence[Shape]) -> Shape:
    shape = _need_rank(ins, (2, 3), "global_avgpool needs a (channels, length) signal or a "
                       "(channels, height, width) image")
    return (shape[0],)


def flatten(attrs: Attrs, ins: Sequence[Shape]) -> Shape:
    return (_numel(ins[0]),)


def add(attrs: Attrs, ins: Sequence[Shape]) -> Shape:
    if any(shape != ins[0] for shape in ins):
        raise OpError(
            f"add needs inputs of one shape, got {[list(s) for s in ins]}; "
            "make the branches' widths match"
        )
    return ins[0]


def concat(attrs: Attrs, ins: Sequence[Shape]) -> Shape:
    rest = {shape[1:] for shape in ins}
    if len({len(s) for s in ins}) != 1 or len(rest) != 1:
        raise OpError(
            f"concat joins along channels and needs the other dims equal, "
            f"got {[list(s) for s in ins]}"
        )
    return (sum(shape[0] for shape in ins), *ins[0][1:])


# ------------------------------------------------------------------ parameters


def linear_params(attrs: Attrs, ins: Sequence[Shape]) -> dict[str, ParamSpec]:
    specs = {"weight": ParamSpec((attrs["out_features"], ins[0][0]))}
    if attrs["bias"]:
        specs["bias"] = ParamSpec((attrs["out_features"],))
    return specs


def conv_params(attrs: Attrs, ins: Sequence[Shape]) -> dict[str, ParamSpec]:
    kernel = dims(attrs["kernel_size"], len(ins[0]) - 1)
    specs = {"weight": ParamSpec((attrs["out_channels"], ins[0][0], *kernel))}
    if attrs["bias"]:
        specs["bias"] = ParamSpec((attrs["out_channels"],))
    return specs


def bn_params(attrs: Attrs, ins: Sequence[Shape]) -> dict[str, ParamSpec]:
    c = (ins[0][0],)
    return {
        "weight": ParamSpec(c),
        "bias": ParamSpec(c),
        "running_mean": ParamSpec(c, trainable=False),
        "running_var": ParamSpec(c, trainable=False),
        "num_batches_tracked": ParamSpec((), trainable=False, integer=True),
    }


def ln_params(attrs: Attrs, ins: Sequence[Shape]) -> dict[str, ParamSpec]:
    return {"weight": ParamSpec(ins[0]), "bias": ParamSpec(ins[0])}


# ----------------------------------------------------------------------- FLOPs
# One forward pass of one sample, a multiply-add being 2 FLOPs.


def linear_flops(attrs: Attrs, ins: Sequence[Shape], out: Shape) -> int:
    return 2 * ins[0][0] * out[0] + (out[0] if attrs["bias"] else 0)


def conv_flops(attrs: Attrs, ins: Sequence[Shape], out: Shape) -> int:
    taps = math.prod(dims(attrs["kernel_size"], len(ins[0]) - 1))
    per_output = 2 * ins[0][0] * taps + (1 if attrs["bias"] else 0)
    return per_output * _numel(out)


def per_output(n: int) -> Flops:
    return lambda attrs, ins, out: n * _numel(out)


def pool_flops(attrs: Attrs, ins: Sequence[Shape], out: Shape) -> int:
    return math.prod(dims(attrs["kernel_size"], len(ins[0]) - 1)) * _numel(out)


def add_flops(attrs: Attrs, ins: Sequence[Shape], out: Shape) -> int:
    return (len(ins) - 1) * _numel(out)


def global_pool_flops(attrs: Attrs, ins: Sequence[Shape], out: Shape) -> int:
    return _numel(ins[0])
