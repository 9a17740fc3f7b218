"""``morphsearch export``: write an architecture as graph, safetensors, ONNX and torch.export."""

from __future__ import annotations

import argparse
from typing import Any

from morphsearch._cli.db import DB_HELP
from morphsearch.errors import ExportError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export an architecture (graph, safetensors, ONNX, torch.export, model card)",
        description="Export one architecture of the lineage database into a folder: "
        "graph.json, weights.safetensors, model.onnx and model.pt2 (dynamic batch axis, "
        "checked against PyTorch) and MODEL_CARD.md.",
    )
    parser.add_argument("--db", default=None, metavar="URL", help=DB_HELP)
    parser.add_argument("--search", metavar="NAME", help="search name (default: the only one)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", metavar="ID", help="the architecture to export")
    which.add_argument("--best", action="store_true", help="the best architecture of the search")
    parser.add_argument("--metric", help="rank --best by this metric (default: the config's)")
    parser.add_argument("--mode", choices=("max", "min"), default=None)
    parser.add_argument("--out", required=True, metavar="DIR", help="destination folder")
    parser.add_argument(
        "--format",
        default=None,
        metavar="LIST",
        help="comma-separated: onnx,pt2,safetensors (default: all three)",
    )
    parser.add_argument(
        "--refit",
        action="store_true",
        help="export the architecture trained again from a fresh initialisation on the "
        "training and validation splits together (the search's recipe at its trial's lr; "
        "the usual last step on small data) instead of the search's weights",
    )
    parser.add_argument("--refit-steps", type=int, default=None, metavar="N",
                        help="the refit's optimizer steps (default: the search's trial budget)")
    parser.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from morphsearch.export import (  # deferred: CLI start-up (torch)
        export_from_store,
        parse_formats,
    )

    formats = parse_formats(args.format)  # before anything slow
    if args.arch and (args.metric or args.mode):
        raise ExportError("--metric/--mode choose the --best architecture; drop them with --arch")
    result = export_from_store(
        args.out,
        db=args.db,
        search=args.search,
        arch_id=args.arch,
        metric=args.metric,
        mode=args.mode,
        formats=formats,
        refit=args.refit,
        refit_steps=args.refit_steps,
    )
    parity = ", ".join(f"{k} max |diff| {v:.2g}" for k, v in sorted(result.parity.items()))
    print(f"wrote {result.out}: {', '.join(result.files)}" + (f" ({parity})" if parity else ""))
    return 0
