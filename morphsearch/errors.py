"""Every error a user can see is a :class:`MorphSearchError`.

Messages are one line: they name the thing that is wrong (file, node, field, URL)
and say how to fix it. The CLI prints ``morphsearch: error: <message>`` on stderr and
exits with code 2; it never shows a traceback for these.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DatabaseError",
    "DatabaseUnreachable",
    "ExportError",
    "GraphFileError",
    "InvalidArchitecture",
    "ModuleImportError",
    "MorphSearchError",
    "MorphismNotApplicable",
    "NotFound",
    "SchemaOutdated",
    "SearchError",
    "UnknownMorphism",
    "WeightsError",
]


class MorphSearchError(Exception):
    """Base class of every user-facing morphsearch error."""

    def __init__(self, message: str) -> None:
        # One line, always: multi-line messages break the CLI's one-line contract.
        super().__init__(" ".join(str(message).split()))


class InvalidArchitecture(MorphSearchError, ValueError):
    """An architecture graph or its weights break an invariant (names the node)."""


class GraphFileError(InvalidArchitecture):
    """A graph file cannot be read: missing, too large, not JSON, wrong format version."""


class WeightsError(MorphSearchError, ValueError):
    """A weights file is missing, corrupted or does not match its architecture."""


class UnknownMorphism(MorphSearchError, KeyError):
    """No morphism is registered under that name (the message lists the valid ones)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class MorphismNotApplicable(MorphSearchError, ValueError):
    """A morphism cannot be applied at that site (the message lists the valid sites)."""


class ConfigError(MorphSearchError, ValueError):
    """A search config file or field is invalid (names the field and the fix)."""


class DatabaseError(MorphSearchError):
    """The lineage database failed; the URL in the message never shows a password."""


class DatabaseUnreachable(DatabaseError):
    """The lineage database cannot be reached or the URL is malformed."""


class SchemaOutdated(DatabaseError):
    """The database schema is older than the code (the message gives the upgrade command)."""


class NotFound(MorphSearchError, LookupError):
    """A search, architecture or trial id does not exist in the lineage database."""


class SearchError(MorphSearchError):
    """A search could not be started, submitted or resumed."""


class ExportError(MorphSearchError):
    """An export failed or its parity check against PyTorch did not pass."""


class ModuleImportError(MorphSearchError, ValueError):
    """A PyTorch module cannot be imported into the IR (names the node, the call, the
    code location and the supported calls)."""


def first_line(exc: BaseException, default: str | None = None) -> str:
    """(Internal, not in ``__all__``: the error classes are the public part.) The first
    non-empty line of ``exc``'s message, for one-line errors; ``default``
    (else the exception's type name) when the message is empty."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else (type(exc).__name__ if default is None else default)
