"""Carry optimizer state from a parent's compiled module to its grown child's.

Growth can then happen mid-training: the old units keep their momentum (SGD) or their
moments and step count (Adam, AdamW, and any optimizer whose per-parameter state is
tensors shaped like the parameter plus scalars), so their next update in the child is
the one they would have made in the parent. New units get zero state inside an existing
tensor; new nodes (deepening) get no state, so the optimizer initialises it lazily, as
for any fresh parameter.

Where the old units sit in the child is worked out from the graph, not guessed from
shapes: widening appends units at the end of a layer's output axis (the morphisms'
convention), and that position is followed through per-unit ops, ``flatten`` (channel
blocks of ``L`` or ``H*W`` features), ``concat`` (offset by the widths before it) and ``add`` to
every consumer's input axis.

Caveat for Adam: the step count is per tensor, so new units inside a grown tensor share
its step ``t`` and their first update is bias-corrected as if they had a history; their
zero moments make that update ``(1 - beta1) / (1 - beta1**(t+1))`` times smaller in ratio
terms than a fresh parameter's, which is the conservative side.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from morphsearch.arch import OPS, Architecture
from morphsearch.errors import WeightsError

__all__ = ["transfer_optimizer", "unit_positions"]

_OUT, _IN = "out", "in"


def _roles(op: str) -> dict[str, tuple[str | None, ...]]:
    """Role of each axis of a units layer's parameters: the layer's own units, its
    input's units, or a kernel axis that never grows (none for other ops)."""
    rank = OPS[op].spatial_rank
    if not OPS[op].is_layer or rank is None:
        return {}
    return {"weight": (_OUT, _IN, *([None] * rank)), "bias": (_OUT,)}


def unit_positions(parent: Architecture, child: Architecture) -> dict[str, torch.Tensor]:
    """Where the parent's units of each node's output axis 0 lie in the child.

    Args:
        parent: the architecture before growth.
        child: the architecture after growth (node names keep their meaning).

    Returns:
        ``{child node: LongTensor}``: entry ``i`` is the child position of the parent's
        unit ``i``. Nodes the parent lacks map every position to itself.
    """
    positions: dict[str, torch.Tensor] = {}
    for node in child.nodes:
        ins = child.inputs(node)
        op = child.op(node)
        if OPS[op].is_layer and node in parent and parent.op(node) == op:
            positions[node] = torch.arange(parent.shape(node)[0])
        elif not ins or OPS[op].is_layer:
            positions[node] = torch.arange(child.shape(node)[0])
        elif op == "concat":  # channels of the inputs one after the other
            offsets = torch.tensor([0, *(child.shape(i)[0] for i in ins)]).cumsum(0)
            positions[node] = torch.cat([positions[i] + offsets[j] for j, i in enumerate(ins)])
        elif op == "flatten" and len(child.shape(ins[0])) > 1:
            per_unit = math.prod(child.shape(ins[0])[1:])  # L or H*W features a channel
            blocks = positions[ins[0]][:, None] * per_unit + torch.arange(per_unit)
            positions[node] = blocks.reshape(-1)
        else:  # per-unit ops, add, pooling, output: units pass straight through
            positions[node] = positions[ins[0]]
    return positions


def _axis_index(
    role: str | None, size: int, node: str, child: Architecture, pos: Mapping[str, torch.Tensor],
    new_size: int,
) -> torch.Tensor:
    if role is None:  # a kernel axis grows on both sides (conv.widen_kernel): stay centred
        return torch.arange(size) + (new_size - size) // 2
    if role == _IN:
        ins = child.inputs(node)
        index = pos[ins[0]] if ins else torch.arange(size)
        # A parameter axis can be tied to the input without being per-unit (e.g. after
        # flatten into a layernorm): fall back to the leading positions.
        return index if len(index) == size else torch.arange(size)
    return torch.arange(size)


def _param_index(
    node: str, pname: str, old_shape: torch.Size, child: Architecture,
    pos: Mapping[str, torch.Tensor],
) -> tuple[torch.Tensor, ...]:
    """Broadcastable advanced index placing a parent tensor inside the child's."""
    roles = _roles(child.op(node)).get(pname) or (_IN, *([None] * (len(old_shape) - 1)))
    index = []
    for axis, (role, size) in enumerate(zip(roles, old_shape)):
        view = [1] * len(old_shape)
        view[axis] = size
        new_size = child.param_specs(node)[pname].shape[axis]
        index.append(_axis_index(role, size, node, child, pos, new_size).view(view))
    return tuple(index)


def _embed(
    value: Any, old_param: torch.Tensor, new_param: torch.Tensor, index: tuple[torch.Tensor, ...]
) -> Any:
    """One state entry: parameter-shaped tensors are zero-padded, others copied."""
    if not isinstance(value, torch.Tensor):
        return value
    if value.shape != old_param.shape or value.dim() == 0:
        return value.detach().clone()
    out = torch.zeros(new_param.shape, dtype=value.dtype, device=new_param.device)
    try:
        out[index] = value.detach().to(new_param.device)
    except IndexError:
        raise WeightsError(
            f"cannot place state of shape {list(value.shape)} into a parameter of shape "
            f"{list(new_param.shape)}: transfer_optimizer carries state across growth only"
        ) from None
    return out


def _split_name(name: str) -> tuple[str, str]:
    parts = name.split(".")
    if len(parts) != 3 or parts[0] != "layers":
        raise WeightsError(
            f"parameter {name!r} is not 'layers.<node>.<param>': pass modules compiled with "
            "Architecture.to_module()"
        )
    return parts[1], parts[2]


def _groups_of(optimizer: torch.optim.Optimizer) -> dict[int, int]:
    return {id(p): g for g, group in enumerate(optimizer.param_groups) for p in group["params"]}


def _check_owned(optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter]) -> None:
    owned = {id(p) for p in params}
    if any(id(p) not in owned for group in optimizer.param_groups for p in group["params"]):
        raise WeightsError(
            "the optimizer holds parameters that parent_module does not have; build it over "
            "parent_module.parameters()"
        )


def _constructor_defaults(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's defaults that its constructor accepts (some are internal)."""
    accepted = inspect.signature(type(optimizer).__init__).parameters
    return {k: v for k, v in optimizer.defaults.items() if k in accepted}


def transfer_optimizer(
    optimizer: torch.optim.Optimizer,
    parent_module: nn.Module,
    child_module: nn.Module,
    parent: Architecture,
    child: Architecture,
) -> torch.optim.Optimizer:
    """A new optimizer over ``child_module`` that continues ``optimizer``'s state.

    Args:
        optimizer: the optimizer training ``parent_module`` (not modified).
        parent_module: ``parent.to_module()`` being trained.
        child_module: ``child.to_module()``, with ``child`` grown from the parent's
            current weights (``parent.with_weights_from(parent_module)``).
        parent: the architecture before growth.
        child: the architecture after growth.

    Returns:
        An optimizer of the same class and hyperparameters (per parameter group) over
        the child's parameters. A child parameter belongs to its parent counterpart's
        group, a new node's parameters to group 0; parameters the old optimizer did not
        train stay out.

    Raises:
        WeightsError: the modules were not compiled from architectures, the optimizer
            trains parameters outside ``parent_module``, or a child tensor is smaller
            than its parent's.
    """
    old_params = dict(parent_module.named_parameters())
    _check_owned(optimizer, old_params.values())
    group_of = _groups_of(optimizer)
    positions = unit_positions(parent, child)
    members: list[list[nn.Parameter]] = [[] for _ in optimizer.param_groups]
    state: dict[nn.Parameter, dict[str, Any]] = {}
    for name, new in child_module.named_parameters():
        node, pname = _split_name(name)
        old = old_params.get(name)
        if old is None:  # a new node: fresh state
            members[0].append(new)
            continue
        if id(old) not in group_of:  # frozen in the parent: frozen in the child
            continue
        members[group_of[id(old)]].append(new)
        index = _param_index(node, pname, old.shape, child, positions)
        state[new] = {k: _embed(v, old, new, index) for k, v in optimizer.state[old].items()}
    groups = [
        {**{k: v for k, v in group.items() if k != "params"}, "params": params}
        for group, params in zip(optimizer.param_groups, members)
        if params
    ]
    new_optimizer = type(optimizer)(groups, **_constructor_defaults(optimizer))
    for param, entries in state.items():
        if entries:
            new_optimizer.state[param] = entries
    return new_optimizer
