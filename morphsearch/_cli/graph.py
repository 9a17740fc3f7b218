"""``morphsearch graph validate|show|draw FILE``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    graph = subparsers.add_parser("graph", help="inspect architecture graph files")
    commands = graph.add_subparsers(dest="graph_command", metavar="COMMAND", required=True)

    validate = commands.add_parser("validate", help="check a graph file (and its weights)")
    validate.add_argument("file", help="graph JSON file")
    validate.set_defaults(func=_validate)

    show = commands.add_parser("show", help="layers, shapes, parameters and FLOPs")
    show.add_argument("file", help="graph JSON file")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_show)

    draw = commands.add_parser("draw", help="draw the architecture as a picture")
    draw.add_argument("file", help="graph JSON file")
    draw.add_argument("--out", required=True, help="output image (.png, .svg or .pdf)")
    draw.set_defaults(func=_draw)


def _load(path: str) -> Any:
    from morphsearch.arch import load

    return load(path)


def _validate(args: argparse.Namespace) -> int:
    arch = _load(args.file)
    print(
        f"{args.file}: valid ({len(arch)} nodes, {arch.num_params:,} params, "
        f"{arch.flops:,} FLOPs, structure {arch.structure_hash[:12]})"
    )
    return 0


def summary(arch: Any) -> dict[str, Any]:
    """The ``graph show --json`` document of an architecture."""
    return {
        "name": arch.graph.graph.get("name"),
        "structure_hash": arch.structure_hash,
        "weights_hash": arch.weights_hash,
        "input_shape": list(arch.input_shape),
        "output_shape": list(arch.output_shape),
        "params": arch.num_params,
        "flops": arch.flops,
        "layers": [
            {
                "id": node,
                "op": arch.op(node),
                "attrs": dict(arch.spec(node).attrs),
                "inputs": list(arch.inputs(node)),
                "shape": list(arch.shape(node)),
                "params": arch.node_params(node),
                "flops": arch.node_flops(node),
            }
            for node in arch.nodes
        ],
    }


def _show(args: argparse.Namespace) -> int:
    arch = _load(args.file)
    doc = summary(arch)
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        print()
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.file}  ({doc['name'] or 'unnamed'})", title_justify="left")
    for column in ("layer", "op", "attributes", "inputs", "output shape"):
        table.add_column(column)
    table.add_column("params", justify="right")
    table.add_column("FLOPs", justify="right")
    for layer in doc["layers"]:
        attrs = ", ".join(f"{k}={v}" for k, v in layer["attrs"].items())
        table.add_row(
            layer["id"], layer["op"], attrs, ", ".join(layer["inputs"]),
            "x".join(map(str, layer["shape"])), f"{layer['params']:,}", f"{layer['flops']:,}",
        )
    table.add_section()
    table.add_row("total", "", "", "", "", f"{doc['params']:,}", f"{doc['flops']:,}")
    console = Console(width=max(120, Console().width))
    console.print(table)
    console.print(f"structure {doc['structure_hash'][:16]}  weights {doc['weights_hash'][:16]}")
    return 0


def _draw(args: argparse.Namespace) -> int:
    from morphsearch.viz import draw_architecture

    arch = _load(args.file)
    draw_architecture(arch, args.out)
    print(f"wrote {args.out}")
    return 0
