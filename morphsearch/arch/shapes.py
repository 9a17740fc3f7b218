"""Shape inference, parameter specs and FLOPs over a whole graph.

Runs in topological order; every error names the node that broke.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from morphsearch.arch.ops import OPS, OpError, ParamSpec, Shape
from morphsearch.errors import InvalidArchitecture


@dataclass(frozen=True)
class NodeInfo:
    """What inference knows about one node: its output shape, parameters and cost."""

    shape: Shape
    params: Mapping[str, ParamSpec]
    flops: int

    @property
    def num_params(self) -> int:
        total = 0
        for spec in self.params.values():
            if spec.trainable:
                n = 1
                for d in spec.shape:
                    n *= d
                total += n
        return total


def infer(
    order: Sequence[str],
    specs: Mapping[str, object],
    inputs: Mapping[str, Sequence[str]],
) -> dict[str, NodeInfo]:
    """Infer every node's shape, parameter specs and FLOPs.

    Args:
        order: node names in topological order.
        specs: node name -> NodeSpec (with resolved attributes).
        inputs: node name -> its input node names, ordered by port.

    Raises:
        InvalidArchitecture: naming the first node whose inputs do not fit its op.
    """
    infos: dict[str, NodeInfo] = {}
    for name in order:
        spec = specs[name]
        op, attrs = spec.op, spec.attrs  # type: ignore[attr-defined]
        opdef = OPS[op]
        in_shapes = [infos[src].shape for src in inputs[name]]
        try:
            shape = tuple(opdef.infer(attrs, in_shapes))
            params = opdef.params(attrs, in_shapes)
            flops = int(opdef.flops(attrs, in_shapes, shape))
        except OpError as exc:
            raise InvalidArchitecture(f"node {name!r} ({op}): {exc}") from None
        infos[name] = NodeInfo(shape, params, flops)
    return infos
