"""Import a user's ``torch.nn.Module`` into the IR: :func:`from_module`.

The module is traced with ``torch.fx`` and run once on the example input for every
intermediate shape; each traced call then becomes IR nodes by
the rule tables of :mod:`morphsearch.arch._fx_rules` (one IR node per call site), with
the module's weights and batch norm buffers. The result is checked against the module
on the example input before it is returned.

What the IR cannot express is refused with a :class:`~morphsearch.errors.ModuleImportError`
naming the node, the call, the code location and the supported calls: ops the IR lacks
(an LSTM, ``torch.sort``), data-dependent control flow (a trace error), unsupported
arguments (``groups``, ``dilation``), and a module with weights called more than once:
the IR has no shared weights, and copying them would untie what the model trains as one.
A stateless module called twice (one ``nn.ReLU`` reused) is simply two nodes.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import re
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import torch
from torch import fx, nn

from morphsearch.arch import _fx_rules as rules
from morphsearch.arch.ir import Architecture
from morphsearch.arch.spec import NodeSpec
from morphsearch.errors import InvalidArchitecture, ModuleImportError, first_line

__all__ = ["from_module", "module_from_factory"]

TOLERANCE = 1e-4  # |IR - module| <= TOLERANCE * (1 + max |module|) on the example input
_TORCH_DIR = str(Path(torch.__file__).parent)
_RESERVED = frozenset({"forward", "training", "layers", "input", "output"})
_NAMES = {"input": "x", "output": "out"}  # as the builders name them


def from_module(module: nn.Module, example_input: torch.Tensor) -> Architecture:
    """The architecture of ``module``, with its weights and batch norm buffers.

    Args:
        module: the model; it is not modified (its train/eval mode is restored).
        example_input: a batch (batch dim first, e.g. ``torch.randn(2, 1, 40)``); it
            fixes the input shape and is the probe of the final check.

    Returns:
        An :class:`Architecture` computing the same function in eval and train mode.

    Raises:
        ModuleImportError: a call the IR cannot express, a trace error, or a module that
            fails on the example input (one line naming the node and the fix).
    """
    if not isinstance(module, nn.Module):
        raise ModuleImportError(f"from_module needs a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 2:
        raise ModuleImportError("example_input must be a batch tensor (batch dim first), "
                                "e.g. torch.randn(2, 1, 40)")
    gm = _traced(module)
    with _eval_mode(module), torch.no_grad():
        expected = _propagate(gm, example_input)
    graph, weights = _Converter(gm).convert()
    graph.graph["name"] = type(module).__name__
    try:
        arch = Architecture(graph, weights)
    except InvalidArchitecture as exc:
        raise ModuleImportError(f"the imported {type(module).__name__} is not a valid "
                                f"graph: {exc}") from None
    _check_same_function(arch, example_input, expected)
    return arch


def module_from_factory(spec: str, **kwargs: Any) -> nn.Module:
    """The module a ``"package.module:factory"`` returns (called with ``kwargs``).

    The current directory is searched too, so a factory beside the config is found.

    Raises:
        ModuleImportError: a malformed spec, a missing module or name, or a factory that
            does not return an ``nn.Module``.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ModuleImportError(f"{spec!r}: write the factory as 'package.module:function'")
    with _cwd_on_path():
        try:
            owner = importlib.import_module(module_name)
        except ImportError as exc:
            raise ModuleImportError(f"{spec!r}: cannot import {module_name!r} ({exc}); "
                                    "check the name and that it is on PYTHONPATH") from None
    factory = getattr(owner, attr, None)
    if not callable(factory):
        raise ModuleImportError(f"{spec!r}: {module_name} has no function {attr!r}")
    try:
        made = factory(**kwargs)
    except Exception as exc:  # the user's factory: its failure, in one line
        raise ModuleImportError(f"{spec!r} raised {type(exc).__name__}: {first_line(exc)}"
                                ) from None
    if not isinstance(made, nn.Module):
        raise ModuleImportError(f"{spec!r} returned {type(made).__name__}, not a "
                                "torch.nn.Module")
    return made


@contextlib.contextmanager
def _cwd_on_path() -> Iterator[None]:
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added:
            sys.path.remove(cwd)


# ------------------------------------------------------------ tracing


def _traced(module: nn.Module) -> fx.GraphModule:
    """Trace ``module``; extra forward arguments keep their defaults (``verbose=False``)."""
    tracer = _Tracer()
    params = list(inspect.signature(module.forward).parameters.values())[1:]
    concrete = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    required = [p.name for p in params if p.default is inspect.Parameter.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    name = type(module).__name__
    if required:
        raise ModuleImportError(f"{name}.forward takes more than one input (also "
                                f"{', '.join(required)}); the IR has one input tensor")
    try:
        graph = tracer.trace(module, concrete_args=concrete or None)
    except Exception as exc:  # any failure of user code under tracing is a refusal
        raise ModuleImportError(f"cannot trace {name}{_where_raised(exc)}: {first_line(exc)}; "
                                "morphsearch imports what torch.fx can trace (no "
                                "data-dependent control flow)") from None
    return fx.GraphModule(tracer.root, graph, name)


class _Tracer(fx.Tracer):
    """Records each node's code location: the innermost frame of the user's code.

    (fx's own ``record_stack_traces`` would do, but its first use imports torch._dynamo,
    which takes seconds.)
    """

    def create_node(self, *args: Any, **kwargs: Any) -> fx.Node:
        node = super().create_node(*args, **kwargs)
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith(_TORCH_DIR):
            frame = frame.f_back  # type: ignore[assignment]
        filename = frame.f_code.co_filename if frame is not None else __file__
        if filename != __file__:  # not a top-level nn.Sequential, traced from here
            node.meta["location"] = f"{Path(filename).name}:{frame.f_lineno}"
        return node


def _where_raised(exc: BaseException) -> str:
    """`` at file.py:12 (code)`` for the innermost frame of user code in a traceback."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(_TORCH_DIR) and f.filename != __file__]
    if not frames:
        return ""
    frame = frames[-1]
    code = f" `{frame.line.strip()}`" if frame.line else ""
    return f" at {Path(frame.filename).name}:{frame.lineno}{code}"


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode for the shape pass (batch norm must not update its running stats)."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


class _ShapeRecorder(fx.Interpreter):
    """Runs the traced module, keeping each tensor's shape in ``node.meta["shape"]`` and
    the node it runs (to name it when the module fails).

    (fx's ``ShapeProp`` would do, but its first use imports sympy, which takes seconds.)
    """

    current: fx.Node | None = None

    def run_node(self, n: fx.Node) -> Any:
        self.current = n
        result = super().run_node(n)
        if isinstance(result, torch.Tensor):
            n.meta["shape"] = tuple(int(d) for d in result.shape)
        return result


def _propagate(gm: fx.GraphModule, example_input: torch.Tensor) -> torch.Tensor:
    prop = _ShapeRecorder(gm)
    try:
        out = prop.run(example_input)
    except Exception as exc:  # the user's model failed on the example: say where
        node = prop.current
        at = "" if node is None else f" at node {node.name!r}{_where(node)}"
        raise ModuleImportError(
            f"{gm.__class__.__name__} fails on an example input of shape "
            f"{list(example_input.shape)}{at}: {first_line(exc.__cause__ or exc)}; check "
            "the input shape (--input-shape, or the dataset's)") from None
    if not isinstance(out, torch.Tensor):
        raise ModuleImportError(f"{gm.__class__.__name__} returns {type(out).__name__}; "
                                "the IR's network returns one tensor")
    return out


def _check_same_function(arch: Architecture, x: torch.Tensor, expected: torch.Tensor) -> None:
    """The imported graph computes what the module computed on the example (catches
    in-place ops on a tensor that is used again, which tracing does not see)."""
    with torch.no_grad():
        got = arch.to_module().eval()(x.detach().to("cpu", arch.dtype))
    expected = expected.detach().to("cpu", got.dtype)
    if got.shape != expected.shape:
        raise ModuleImportError(f"the imported graph returns shape {list(got.shape)}, the "
                                f"module {list(expected.shape)}")
    error = float((got - expected).abs().max()) if got.numel() else 0.0
    if not error <= TOLERANCE * (1 + float(expected.abs().max())):
        raise ModuleImportError(
            f"the imported graph differs from the module by {error:.3g} on the example "
            "input; an in-place op (inplace=True, x.relu_()) on a tensor used again is "
            "the usual cause: make it out of place")


# ----------------------------------------------------------- converting


class _Converter:
    """Walks the traced graph once, building the IR graph and its weights."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.graph = nx.DiGraph()
        self.weights: dict[str, dict[str, torch.Tensor]] = {}
        self.env: dict[fx.Node, Any] = {}
        self.calls: dict[str, str] = {}  # module target -> its first node, for reuse checks
        self.node: fx.Node | None = None
        self._first_input: fx.Node | None = None

    def convert(self) -> tuple[nx.DiGraph, dict[str, dict[str, torch.Tensor]]]:
        for node in self.gm.graph.nodes:
            self.node = node
            try:
                self.env[node] = self._value_of(node)
            except rules.Refusal as exc:
                raise ModuleImportError(f"cannot import node {node.name!r} "
                                        f"({_describe(self.gm, node)}{_where(node)}): {exc}"
                                        ) from None
        return self.graph, self.weights

    def _value_of(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            return self._placeholder(node)
        if node.op == "output":
            return self._output(node)
        if node.op == "get_attr":
            raise rules.Refusal(f"the tensor {node.target!r} is used directly in forward; "
                                "the IR keeps weights only inside layers")
        if node.op == "call_module":
            module = self.gm.get_submodule(str(node.target))
            self._check_not_reused(node, module)
            rule = rules.MODULE_RULES.get(type(module))
        elif node.op == "call_function":
            module, rule = None, _function_rule(node.target)
        else:
            module, rule = None, rules.METHOD_RULES.get(str(node.target))
        if rule is None:
            raise rules.Refusal(f"not supported by the IR; {rules.supported()}")
        return rule(self, node, module)

    def _placeholder(self, node: fx.Node) -> Any:
        if self._first_input is not None:  # an argument fixed to its default at tracing
            return node.args[0] if node.args else None
        self._first_input = node
        return self.emit("input", [], {"shape": list(self.shape(node)[1:])})

    def _output(self, node: fx.Node) -> None:
        value = self.resolve(node.args[0])
        if not isinstance(value, rules.Value):
            raise rules.Refusal("the network must return one tensor")
        self.emit("output", [self.tensor(node.args[0])])

    def _check_not_reused(self, node: fx.Node, module: nn.Module) -> None:
        target = str(node.target)
        first = self.calls.setdefault(target, node.name)
        stateful = any(True for _ in module.parameters()) or any(True for _ in module.buffers())
        if first != node.name and stateful:
            raise rules.Refusal(
                f"module {target!r} is called again (first as node {first!r}); the IR has "
                "no shared weights: give each call its own module (copy.deepcopy of it "
                "unties the weights)")

    # ----------------------------------------------------- the rules' Context
    def tensor(self, arg: Any) -> rules.Value:
        value = self.resolve(arg)
        if not isinstance(value, rules.Value):
            raise rules.Refusal(f"expected a tensor, got the constant {value!r}")
        if value.squeezed:
            raise rules.Refusal("the output of an adaptive average pool to 1 must be "
                                "flattened next (the IR's global_avgpool gives (C,))")
        return value

    def resolve(self, arg: Any) -> Any:
        return fx.node.map_arg(arg, lambda n: self.env[n]) if arg is not None else None

    def shape(self, arg: Any) -> tuple[int, ...]:
        shape = arg.meta.get("shape") if isinstance(arg, fx.Node) else None
        if shape is None:
            raise rules.Refusal(f"expected a tensor, got {arg!r}")
        return tuple(shape)

    def emit(self, op: str, inputs: Sequence[rules.Value],
             attrs: Mapping[str, Any] | None = None,
             weights: Mapping[str, torch.Tensor] | None = None) -> rules.Value:
        assert self.node is not None
        name = self._fresh(_NAMES.get(op) or self.node.name, op)
        try:
            spec = NodeSpec(op, dict(attrs or {}))
        except InvalidArchitecture as exc:
            raise rules.Refusal(str(exc)) from None
        self.graph.add_node(name, spec=spec)
        for port, value in enumerate(self._distinct(inputs, name)):
            self.graph.add_edge(value.name, name, port=port)
        if weights:
            self.weights[name] = dict(weights)
        return rules.Value(name)

    def _distinct(self, inputs: Sequence[rules.Value], name: str) -> list[rules.Value]:
        """A graph has one edge per pair of nodes: ``x + x`` reads x's copy (identity)."""
        out: list[rules.Value] = []
        for port, value in enumerate(inputs):
            if value in out:
                copy = self._fresh(f"{name}_in{port}")
                self.graph.add_node(copy, spec=NodeSpec("identity"))
                self.graph.add_edge(value.name, copy, port=0)
                value = rules.Value(copy)
            out.append(value)
        return out

    def _fresh(self, name: str, op: str = "identity") -> str:
        """A new valid node name; a bare index (``nn.Sequential``'s ``_0``) gets its op."""
        base = re.sub(r"\W", "_", name)[:100]
        if not base.strip("_") or base.lstrip("_")[0].isdigit():
            base = f"{op}_{base.lstrip('_')}"
        if base in _RESERVED:
            base = f"{base}_"
        candidate, i = base, 1
        while candidate in self.graph:
            candidate, i = f"{base}_{i}", i + 1
        return candidate


def _function_rule(target: Any) -> rules.Rule | None:
    try:
        return rules.FUNCTION_RULES.get(target)
    except TypeError:  # an unhashable target
        return None


def _describe(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        cls = type(gm.get_submodule(str(node.target)))
        prefix = "nn." if cls.__module__.startswith("torch.nn") else ""
        return f"{prefix}{cls.__name__} {str(node.target)!r}"
    if node.op == "call_function":
        target: Any = node.target
        if _function_rule(target) is not None:
            return rules.FUNCTION_NAMES[target]
        module = getattr(target, "__module__", None) or "torch"
        return f"{module}.{getattr(target, '__name__', target)}"
    if node.op == "call_method":
        return f".{node.target}()"
    return node.op


def _where(node: fx.Node) -> str:
    """`` at file.py:12``: where the user's code makes the call, if known."""
    location = node.meta.get("location")
    return f" at {location}" if location else ""
