"""How each op runs in PyTorch: its module, its functional form and its generated code.

Three forms, each filling an :class:`~morphsearch.arch.ops.OpDef` field:

* ``module(attrs, in_shape, initialise) -> nn.Module``: stateful nodes (layers with
  weights, dropout). The compiled forward calls ``layers.<node>(x)``.
* ``functional(attrs, weights, train, out_shape) -> fn(x)``: the same maths over given
  weight tensors (:func:`morphsearch.arch.compile.evaluate` runs these, no module built).
* ``code(args, attrs, in_shape) -> str``: stateless nodes, a Python expression over the
  input variables, emitted into the generated forward (namespace: ``torch``, ``F``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from morphsearch.arch._rules import Shape, dims

Fn = Callable[[torch.Tensor], torch.Tensor]
ModuleFactory = Callable[[Mapping[str, Any], Shape, bool], nn.Module]
Functional = Callable[[Mapping[str, Any], Mapping[str, torch.Tensor], bool, Shape], Fn]
Code = Callable[[Sequence[str], Mapping[str, Any], Shape], str]


class _NoInit:
    """Mixin: skip the random initialisation a layer's constructor would do.

    Compiled layers receive the architecture's weights right after construction, so
    initialising them first is wasted work (on the meta device it is even slower, as
    PyTorch runs the initialisers through Python decompositions there).
    """

    def reset_parameters(self) -> None:
        pass

    def _get_name(self) -> str:  # print as the PyTorch layer it is
        return type(self).__mro__[2].__name__


# Module-level classes (not made with type()), so that compiled modules pickle.
class _Linear(_NoInit, nn.Linear):
    pass


class _Conv1d(_NoInit, nn.Conv1d):
    pass


class _Conv2d(_NoInit, nn.Conv2d):
    pass


class _BatchNorm1d(_NoInit, nn.BatchNorm1d):
    pass


class _BatchNorm2d(_NoInit, nn.BatchNorm2d):
    pass


class _LayerNorm(_NoInit, nn.LayerNorm):
    pass


_SHELL: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: _Linear, nn.Conv1d: _Conv1d, nn.Conv2d: _Conv2d,
    nn.BatchNorm1d: _BatchNorm1d, nn.BatchNorm2d: _BatchNorm2d, nn.LayerNorm: _LayerNorm,
}


def _cls(cls: type[nn.Module], initialise: bool) -> Any:
    return cls if initialise else _SHELL[cls]


# ---------------------------------------------------------------- modules


def linear_module(attrs: Mapping[str, Any], in_shape: Shape, initialise: bool) -> nn.Module:
    return _cls(nn.Linear, initialise)(in_shape[0], attrs["out_features"], bias=attrs["bias"])


def conv_module(rank: int) -> ModuleFactory:
    cls = {1: nn.Conv1d, 2: nn.Conv2d}[rank]

    def make(attrs: Mapping[str, Any], in_shape: Shape, initialise: bool) -> nn.Module:
        k, s, p = (dims(attrs[a], rank) for a in ("kernel_size", "stride", "padding"))
        return _cls(cls, initialise)(in_shape[0], attrs["out_channels"], k, stride=s,
                                     padding=p, bias=attrs["bias"])

    return make


def batchnorm_module(attrs: Mapping[str, Any], in_shape: Shape, initialise: bool) -> nn.Module:
    cls = nn.BatchNorm1d if len(in_shape) <= 2 else nn.BatchNorm2d
    return _cls(cls, initialise)(in_shape[0], eps=attrs["eps"], momentum=attrs["momentum"])


def layernorm_module(attrs: Mapping[str, Any], in_shape: Shape, initialise: bool) -> nn.Module:
    return _cls(nn.LayerNorm, initialise)(list(in_shape), eps=attrs["eps"])


def dropout_module(attrs: Mapping[str, Any], in_shape: Shape, initialise: bool) -> nn.Module:
    return nn.Dropout(attrs["p"])


# ------------------------------------------------------------ functional forms


def linear_fn(a: Mapping[str, Any], w: Mapping[str, torch.Tensor], train: bool,
              shape: Shape) -> Fn:
    weight, bias = w["weight"], w.get("bias")
    return lambda x: F.linear(x, weight, bias)


def conv_fn(rank: int) -> Functional:
    conv = {1: F.conv1d, 2: F.conv2d}[rank]

    def make(a: Mapping[str, Any], w: Mapping[str, torch.Tensor], train: bool,
             shape: Shape) -> Fn:
        weight, bias = w["weight"], w.get("bias")
        stride, padding = dims(a["stride"], rank), dims(a["padding"], rank)
        return lambda x: conv(x, weight, bias, stride, padding)

    return make


def batchnorm_fn(a: Mapping[str, Any], w: Mapping[str, torch.Tensor], train: bool,
                 shape: Shape) -> Fn:
    # train mode: batch statistics, running ones left as they are (never written)
    mean, var = (None, None) if train else (w["running_mean"], w["running_var"])
    weight, bias, eps = w["weight"], w["bias"], a["eps"]
    return lambda x: F.batch_norm(x, mean, var, weight, bias, train, 0.0, eps)


def layernorm_fn(a: Mapping[str, Any], w: Mapping[str, torch.Tensor], train: bool,
                 shape: Shape) -> Fn:
    weight, bias, eps = w["weight"], w["bias"], a["eps"]
    return lambda x: F.layer_norm(x, shape, weight, bias, eps)


def dropout_fn(a: Mapping[str, Any], w: Mapping[str, torch.Tensor], train: bool,
               shape: Shape) -> Fn:
    p = a["p"]
    return lambda x: F.dropout(x, p, train)


# ---------------------------------------------------------------- generated code


def call(fn: str) -> Code:
    """``fn(x)`` on the one input."""
    return lambda args, attrs, in_shape: f"{fn}({args[0]})"


def pool_code(kind: str) -> Code:
    """``F.<kind>_pool1d`` / ``F.<kind>_pool2d`` by the input's spatial rank."""

    def code(args: Sequence[str], attrs: Mapping[str, Any], in_shape: Shape) -> str:
        rank = len(in_shape) - 1
        k = _literal(attrs["kernel_size"])
        s = k if attrs["stride"] is None else _literal(attrs["stride"])
        return f"F.{kind}_pool{rank}d({args[0]}, {k}, {s}, {_literal(attrs['padding'])})"

    return code


def _literal(value: int | Sequence[int]) -> str:
    return str(value) if isinstance(value, int) else str(tuple(value))


def global_avgpool_code(args: Sequence[str], attrs: Mapping[str, Any], in_shape: Shape) -> str:
    spatial = tuple(range(2, len(in_shape) + 1))
    return f"torch.mean({args[0]}, dim={spatial})"


# ReLU is emitted as torch.clamp itself (not via compile.relu) to save a Python call per
# layer; its autograd derivative at 0 is 1 (see morphsearch.arch.compile).
def relu_code(args: Sequence[str], attrs: Mapping[str, Any], in_shape: Shape) -> str:
    return f"torch.clamp({args[0]}, min=0.0)"


def flatten_code(args: Sequence[str], attrs: Mapping[str, Any], in_shape: Shape) -> str:
    return f"torch.flatten({args[0]}, 1)"


def add_code(args: Sequence[str], attrs: Mapping[str, Any], in_shape: Shape) -> str:
    return " + ".join(args)


def concat_code(args: Sequence[str], attrs: Mapping[str, Any], in_shape: Shape) -> str:
    return f"torch.cat(({', '.join(args)},), dim=1)"
