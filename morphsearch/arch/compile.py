"""Architecture -> ``torch.nn.Module`` and weights back out.

The compiled module (:class:`CompiledArchitecture`) has one submodule per stateful node
under ``module.layers[<node>]`` and a generated straight-line ``forward`` (its source is
``module.code``), so a forward pass costs what the hand-written module would: no
interpreter loop over nodes. Generated code is compiled once per distinct graph and
cached; layers are created without random initialisation and given the architecture's
weights, so compiling costs little. Growth compiles many children, and
this keeps it cheap (bench/growth_cost.py).

ReLU: the IR's ``relu`` is ``torch.clamp(x, min=0)``. Its forward equals ``torch.relu``,
but autograd gives it derivative 1 at 0 where ``torch.relu`` gives 0. That matters for
growth: GradMax starts new neurons with zero incoming weights, so their pre-activation
is exactly 0; with relu'(0) = 0 they would never receive a gradient and stay frozen.
"""

from __future__ import annotations

import functools
import types
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from morphsearch.arch.ops import OPS
from morphsearch.errors import WeightsError

if TYPE_CHECKING:
    from morphsearch.arch.ir import Architecture, NodeSpec

__all__ = [
    "CompiledArchitecture",
    "compile_module",
    "evaluate",
    "init_weights",
    "make_layer",
    "relu",
    "weights_from_module",
]


def relu(x: torch.Tensor) -> torch.Tensor:
    """ReLU whose autograd derivative at 0 is 1 (see the module docstring)."""
    return torch.clamp(x, min=0)


def make_layer(
    spec: NodeSpec, in_shape: tuple[int, ...], *, initialise: bool = True
) -> nn.Module | None:
    """The ``nn.Module`` for a stateful node (``OPS[op].module``), or None for a
    stateless one.

    With ``initialise=False`` the parameters are left uninitialised (to be assigned).
    """
    factory = OPS[spec.op].module
    return factory(spec.attrs, in_shape, initialise) if factory else None


# ------------------------------------------------------------- generated code


def generate_code(arch: Architecture) -> str:
    """The Python source of ``arch``'s forward function ``forward(self, x)``."""
    names: dict[str, str] = {}
    lines = ["def forward(self, x):", "    layers = self.layers"]
    for node in arch.nodes:
        spec = arch.spec(node)
        args = [names[src] for src in arch.inputs(node)]
        opdef = OPS[spec.op]
        if not args:  # the input
            names[node] = "x"
        elif opdef.has_module:
            names[node] = f"v_{node}"
            lines.append(f"    {names[node]} = layers.{node}({args[0]})")
        elif opdef.code is None:  # identity, output: the value passes through
            names[node] = args[0]
        else:
            names[node] = f"v_{node}"
            in_shape = arch.shape(arch.inputs(node)[0])
            lines.append(f"    {names[node]} = {opdef.code(args, spec.attrs, in_shape)}")
    lines.append(f"    return {names[arch.output_node]}")
    return "\n".join(lines) + "\n"


# each architecture's compiled forward, made on first use and dropped with the architecture
_FORWARDS: weakref.WeakKeyDictionary[Architecture, Callable[..., torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def forward_function(arch: Architecture) -> Callable[..., torch.Tensor]:
    """``arch``'s compiled generated forward, made once per architecture.

    A child whose only changes are attributes of layer nodes (the ops with a module:
    widening) has the same code, and :meth:`Architecture.respecified` hands it over
    (see :func:`share_forward`).
    """
    fn = _FORWARDS.get(arch)
    if fn is None:
        fn = _FORWARDS[arch] = _compiled(generate_code(arch))
    return fn


def share_forward(parent: Architecture, child: Architecture, changed_ops: Iterable[str]) -> None:
    """Let ``child`` reuse ``parent``'s compiled forward if ``parent`` has one and
    changing attributes of nodes with ``changed_ops`` keeps the generated code (a
    layer node's line is ``layers.<node>(x)`` whatever its attributes)."""
    fn = _FORWARDS.get(parent)
    if fn is not None and all(OPS[op].has_module for op in changed_ops):
        _FORWARDS[child] = fn


@functools.lru_cache(maxsize=1024)
def _compiled(code: str) -> Callable[..., torch.Tensor]:
    namespace: dict[str, Any] = {"torch": torch, "F": F}
    exec(compile(code, "<morphsearch forward>", "exec"), namespace)  # our own generated code
    return namespace["forward"]


class CompiledArchitecture(nn.Module):
    """An architecture as a module: ``layers`` (a ModuleDict by node) and ``code``.

    Pickles by its generated source, which is recompiled on load.
    """

    def __init__(self, layers: nn.ModuleDict, code: str) -> None:
        super().__init__()
        self.layers = layers
        self.code = code
        self._forward = _compiled(code)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self, x)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_forward", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._forward = _compiled(self.code)


# ------------------------------------------------------------------ compile


def _build_layers(arch: Architecture, *, initialise: bool) -> nn.ModuleDict:
    layers = nn.ModuleDict()
    for node in arch.nodes:
        ins = arch.inputs(node)
        layer = make_layer(arch.spec(node), arch.shape(ins[0]) if ins else (),
                           initialise=initialise)
        if layer is not None:
            layers[node] = layer
    return layers


def compile_module(
    arch: Architecture,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> CompiledArchitecture:
    """Compile ``arch`` into a module carrying (copies of) its weights.

    Args:
        arch: the architecture.
        device: where the module lives (default CPU).
        dtype: float dtype of the module (default: the architecture's).

    Returns:
        A :class:`CompiledArchitecture`; ``module.layers`` is keyed by node name and its
        state_dict keys are ``layers.<node>.<param>``.
    """
    layers = _build_layers(arch, initialise=False)  # the weights are assigned below
    dtype = dtype or arch.dtype
    for node, params in arch.weights.items():
        _assign(layers[node], params, device, dtype)
    return CompiledArchitecture(layers, generate_code(arch))


def _assign(
    layer: nn.Module, params: Mapping[str, torch.Tensor], device: torch.device | str | None,
    dtype: torch.dtype,
) -> None:
    """Put copies of ``params`` into the layer's parameter and buffer slots.

    What ``load_state_dict(assign=True)`` does for these layers, without its per-key
    machinery (a third of compile time on small nets); the architecture has already
    checked every shape against the layer's.
    """
    slots, buffers = layer._parameters, layer._buffers
    for pname, tensor in params.items():
        value = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else None,
                          copy=True)
        if pname in slots:
            slots[pname] = nn.Parameter(value)
        else:
            buffers[pname] = value


def evaluate(
    arch: Architecture,
    x: torch.Tensor,
    *,
    train: bool = False,
    hook: Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor | None] | None = None,
    dropout: bool | None = None,
) -> torch.Tensor:
    """Run ``arch`` on ``x`` without building a module.

    The same generated forward as :func:`compile_module`, over functional layers that
    read the architecture's weights (never written: in train mode batchnorm uses batch
    statistics and does not update its running ones). Costs the forward pass alone,
    where compiling first costs a module per layer: for one-off passes (a morphism's
    batch gradient, a preservation check) on small networks.

    Args:
        arch: the architecture; unchanged.
        x: a batch, cast to the architecture's dtype.
        train: batch statistics and dropout (from the global RNG, like the module).
        hook: ``hook(node, input, output)`` after each node compiled as a module
            (``OPS[op].has_module``: linear, conv, batchnorm, layernorm, dropout); a
            tensor it returns replaces the output.
        dropout: whether dropout drops (default: ``train``); False gives train-mode
            batchnorm without random masks.
    """
    fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    for node in arch.nodes:
        spec = arch.spec(node)
        make = OPS[spec.op].functional
        if make is None:
            continue
        mode = train if dropout is None or not OPS[spec.op].stochastic else dropout
        fn = make(spec.attrs, arch.weights.get(node, {}), mode, arch.shape(node))
        fns[node] = fn if hook is None else _hooked(node, fn, hook)
    runner = types.SimpleNamespace(layers=types.SimpleNamespace(**fns))
    dtype = arch.dtype
    return forward_function(arch)(runner, x if x.dtype == dtype else x.to(dtype))


_Fn = Callable[[torch.Tensor], torch.Tensor]


def _hooked(
    node: str, fn: _Fn, hook: Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor | None]
) -> _Fn:
    def run(x: torch.Tensor) -> torch.Tensor:
        out = fn(x)
        replaced = hook(node, x, out)
        return out if replaced is None else replaced

    return run


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
        layers = _build_layers(arch, initialise=True)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for node, layer in layers.items():
        state = layer.state_dict()
        if state:
            out[node] = {
                k: (t.to(dtype) if t.is_floating_point() else t) for k, t in state.items()
            }
    return out
