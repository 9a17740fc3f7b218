"""The ``morphsearch`` command line.

Each command group lives in ``morphsearch/_cli/<group>.py`` and registers itself
with :func:`argparse` here. Handlers import heavy libraries (torch, ray) inside the
handler, so ``morphsearch lineage ...`` stays fast. Every
:class:`~morphsearch.errors.MorphSearchError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from morphsearch import __version__
from morphsearch.errors import MorphSearchError

# command-group modules, each exposing ``register(subparsers)``
_GROUPS = ("graph", "search", "lineage", "db", "export", "report")

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 128 + 13  # SIGPIPE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="morphsearch",
        description="Grow neural networks with function-preserving morphisms.",
    )
    parser.add_argument("--version", action="version", version=f"morphsearch {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in _GROUPS:
        try:
            module = importlib.import_module(f"morphsearch._cli.{group}")
        except ModuleNotFoundError as exc:
            if exc.name != f"morphsearch._cli.{group}":
                raise
            continue  # group not built yet
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe must fail here, not at interpreter exit
    except MorphSearchError as exc:
        print(f"morphsearch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("morphsearch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _reader_left()
    return int(code or 0)


def _reader_left() -> int:
    """The reader of stdout went away (``... | head``): stop quietly, like ``cat`` does.

    Python's own recipe: point stdout at /dev/null, so the flush at exit cannot raise
    again, and exit 128 + SIGPIPE as a shell reports a process killed by SIGPIPE.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
