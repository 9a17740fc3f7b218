"""``morphsearch graph validate|show|draw|morphisms FILE``, ``graph grow FILE MORPHISM`` and
``graph import FACTORY``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from morphsearch.errors import ConfigError, MorphSearchError

MAX_SHOWN_LAYERS = 200  # graph show's table; --all or --json for every layer


def register(subparsers: Any) -> None:
    graph = subparsers.add_parser("graph", help="inspect architecture graph files")
    commands = graph.add_subparsers(dest="graph_command", metavar="COMMAND", required=True)

    validate = commands.add_parser("validate", help="check a graph file (and its weights)")
    validate.add_argument("file", help="graph JSON file")
    validate.set_defaults(func=_validate)

    show = commands.add_parser("show", help="layers, shapes, parameters and FLOPs")
    show.add_argument("file", help="graph JSON file")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.add_argument("--all", action="store_true",
                      help=f"list every layer (default: the first and last "
                           f"{MAX_SHOWN_LAYERS // 2} of a longer graph)")
    show.set_defaults(func=_show)

    draw = commands.add_parser("draw", help="draw the architecture as a picture")
    draw.add_argument("file", help="graph JSON file")
    draw.add_argument("--out", required=True, help="output image (.png, .svg or .pdf)")
    draw.set_defaults(func=_draw)

    morphs = commands.add_parser(
        "morphisms", help="the morphisms, where each applies in a graph, and their parameters"
    )
    morphs.add_argument("file", help="graph JSON file")
    morphs.add_argument("--json", action="store_true", help="machine-readable output")
    morphs.set_defaults(func=_morphisms)

    grow = commands.add_parser(
        "grow", help="apply a morphism to a graph file and write the child (graph + weights)"
    )
    grow.add_argument("file", help="graph JSON file (its .safetensors weights beside it)")
    grow.add_argument("morphism", help="a morphism name (see `graph morphisms FILE`)")
    grow.add_argument("--site", help="where to apply it (default: its first site)")
    grow.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                      help="a morphism parameter, VALUE in JSON (k=2, scale_mode=fixed); "
                           "repeatable")
    grow.add_argument("--seed", type=int, default=0, help="seeds every random choice (0)")
    grow.add_argument("--data", metavar="DATASET",
                      help="dataset whose first training samples are the batch: gradient "
                           "morphisms need one, and it is the preservation check's probe "
                           "(teacher_student, digits, mnist1d, or npz:PATH for a "
                           ".npz file)")
    grow.add_argument("--batch-size", type=int, default=256, help="samples in the batch (256)")
    grow.add_argument("--out", required=True, help="the child's graph file (.json); its "
                                                   "weights are written beside it")
    grow.add_argument("--json", action="store_true", help="print the morphism record as JSON")
    grow.set_defaults(func=_grow)

    imp = commands.add_parser(
        "import", help="import a PyTorch module (a factory's) as a graph file with its weights"
    )
    imp.add_argument("factory", help="'package.module:function' returning the nn.Module "
                                     "(its weights are kept)")
    imp.add_argument("--input-shape", required=True, metavar="DIMS",
                     help="one sample's shape without the batch dim, e.g. 1,40 or 3,32,32")
    imp.add_argument("--out", required=True, help="the graph file (.json); its weights are "
                                                  "written beside it")
    imp.add_argument("--json", action="store_true", help="print the summary as JSON")
    imp.set_defaults(func=_import)


def _print_json(doc: Any) -> int:
    # one write: json.dump writes every token separately (800,000 writes for a
    # 20,000-layer graph)
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    return 0


def _load(path: str) -> Any:
    from morphsearch.arch import load  # deferred: CLI start-up (torch)

    return load(path)


def _validate(args: argparse.Namespace) -> int:
    from morphsearch.arch.io import weights_path_for  # deferred: CLI start-up (torch)

    arch = _load(args.file)
    weights = weights_path_for(args.file)
    checked = (
        f"weights {weights} checked against it"
        if weights.exists()
        else f"no weights file {weights} beside it, so no weights checked"
    )
    print(
        f"{args.file}: valid ({len(arch)} nodes, {arch.num_params:,} params, "
        f"{arch.flops:,} FLOPs, structure {arch.structure_hash[:12]}); {checked}"
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
        return _print_json(doc)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.file}  ({doc['name'] or 'unnamed'})", title_justify="left")
    for column in ("layer", "op", "attributes", "inputs", "output shape"):
        table.add_column(column)
    table.add_column("params", justify="right")
    table.add_column("FLOPs", justify="right")
    layers = doc["layers"]
    # rich lays out a table cell by cell: 100,000 rows take minutes, so a long graph
    # shows its ends and says how to see the rest
    hidden = len(layers) - MAX_SHOWN_LAYERS if not args.all else 0
    if hidden > 0:
        half = MAX_SHOWN_LAYERS // 2
        layers = [*layers[:half], None, *layers[-half:]]
    for layer in layers:
        if layer is None:
            table.add_row(f"... {hidden:,} more layers (--all or --json lists them)",
                          "", "", "", "", "", "")
            continue
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
    from morphsearch.arch.io import read_graph_file  # deferred: CLI start-up (torch)
    from morphsearch.viz import (  # deferred: CLI start-up (networkx)
        MAX_DRAWN_NODES,
        draw_architecture,
    )

    nodes = read_graph_file(args.file).get("nodes")
    if isinstance(nodes, list) and len(nodes) > MAX_DRAWN_NODES:
        # refuse before building (and initialising) a graph too large to draw
        raise MorphSearchError(
            f"{args.file}: cannot draw {len(nodes):,} layers (at most {MAX_DRAWN_NODES} fit "
            f"a readable picture); list them with: morphsearch graph show {args.file}"
        )
    arch = _load(args.file)
    draw_architecture(arch, args.out)
    print(f"wrote {args.out}")
    return 0


def _morphisms(args: argparse.Namespace) -> int:
    from morphsearch import morphisms  # deferred: CLI start-up (torch)

    arch = _load(args.file)
    doc = [
        {**entry, "sites": morphisms.sites(entry["name"], arch)}
        for entry in morphisms.describe()
    ]
    if args.json:
        return _print_json(doc)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.file}: morphisms", title_justify="left")
    for column in ("morphism", "sites", "keeps function", "needs batch", "parameters (defaults)"):
        table.add_column(column)
    for entry in doc:
        table.add_row(
            entry["name"], ", ".join(entry["sites"]) or "none",
            "yes" if entry["preserves_function"] else "no",
            "yes" if entry["needs_batch"] else "no",
            ", ".join(f"{k}={v!r}" for k, v in entry["params"].items()),
        )
    Console(width=max(120, Console().width)).print(table)
    return 0


def _grow(args: argparse.Namespace) -> int:
    from morphsearch import morphisms  # deferred: CLI start-up (torch)
    from morphsearch.arch import save  # deferred: CLI start-up (torch)

    out = _checked_out(args.out)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}: give at least 1 sample")
    params = _parsed_params(args.param)
    if morphisms.get(args.morphism).needs_batch and not args.data:
        from morphsearch.data import list_datasets  # deferred: CLI start-up (torch)

        raise ConfigError(f"{args.morphism} needs a data batch: pass --data DATASET "
                          f"({', '.join(list_datasets())})")
    arch = _load(args.file)
    batch = _first_samples(args.data, arch, args.batch_size) if args.data else None
    result = morphisms.apply(args.morphism, arch, args.site, batch=batch, seed=args.seed,
                             **params)
    save(result.child, out)  # only once the morphism has succeeded: nothing half-written
    record = result.record.to_json()
    if args.json:
        return _print_json(record)
    shown = ", ".join(f"{k}={v!r}" for k, v in record["params"].items())
    error = record["preservation_error"]
    print(
        f"{record['name']} at {record['site']} ({shown}; seed {record['seed']}): "
        f"{arch.num_params:,} -> {result.child.num_params:,} params, preservation error "
        f"{'not measured' if error is None else f'{error:.3g}'}"
        f"{'' if batch is not None else ' (on random inputs)'}; wrote {out} and "
        f"{out.with_suffix('.safetensors').name}"
    )
    return 0


def _checked_out(path: str) -> Any:
    from pathlib import Path

    out = Path(path)
    if out.suffix != ".json":
        raise ConfigError(f"--out {out}: give a .json graph file path (the weights are "
                          f"written beside it as {out.stem}.safetensors)")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: directory {out.parent} does not exist; create it first")
    return out


def _import(args: argparse.Namespace) -> int:
    import torch

    from morphsearch.arch import save  # deferred: CLI start-up (torch)
    from morphsearch.arch.fx_import import (  # deferred: CLI start-up (torch)
        from_module,
        module_from_factory,
    )

    out = _checked_out(args.out)
    try:
        shape = [int(d) for d in args.input_shape.split(",")]
    except ValueError:
        shape = []
    if not shape or min(shape) < 1:
        raise ConfigError(f"--input-shape {args.input_shape!r}: give positive ints separated "
                          "by commas, without the batch dim, e.g. 1,40")
    module = module_from_factory(args.factory)
    example = torch.randn((2, *shape), generator=torch.Generator().manual_seed(0))
    arch = from_module(module, example)
    save(arch, out)  # only once the import has succeeded: nothing written on a refusal
    return _show(argparse.Namespace(file=str(out), json=args.json, all=False))


def _parsed_params(items: list[str]) -> dict[str, Any]:

    params: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--param {item!r}: write NAME=VALUE, e.g. --param k=2")
        try:
            params[name] = json.loads(raw)
        except json.JSONDecodeError:
            params[name] = raw  # a bare word: a string (scale_mode=fixed)
    return params


def _first_samples(name: str, arch: Any, n: int) -> tuple[Any, Any]:
    """The first ``n`` training samples of dataset ``name``, shaped for ``arch``'s input
    (flat features are reshaped to an image input of the same size, e.g. digits' 64 ->
    1x8x8)."""
    import math

    from morphsearch.data import load_dataset  # deferred: CLI start-up (torch)

    kind, _, path = name.partition(":")  # "npz:PATH" names a file of the npz dataset
    if kind == "npz" and not path:
        raise ConfigError("--data npz needs its file: --data npz:PATH/TO/DATA.npz")
    options: dict[str, Any] = {"path": path} if path else {}
    data = load_dataset(kind, **options)
    x, y = data.x_train[:n], data.y_train[:n]
    shape = tuple(arch.input_shape)
    if tuple(x.shape[1:]) != shape and math.prod(x.shape[1:]) == math.prod(shape):
        x = x.reshape(len(x), *shape)
    return x, y
