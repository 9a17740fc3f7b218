"""Architecture ids as users type them: ``search/trial`` in full, or the bare trial id
that progress lines print, or a unique prefix; a near miss gets "did you mean".

Only the commands resolve ids this way: the store's own lookups stay exact, so a
resumed search never mistakes one trial for another.
"""

from __future__ import annotations

import difflib

from sqlalchemy import select
from sqlalchemy.orm import Session

from morphsearch.errors import NotFound
from morphsearch.lineage.models import ArchitectureRow

__all__ = ["resolve_arch_id"]

MAX_LISTED = 5


def resolve_arch_id(session: Session, wanted: str) -> str:
    """The full id of the one architecture ``wanted`` names.

    Raises:
        NotFound: none or several match (the message lists the candidates).
    """
    column = ArchitectureRow.arch_id
    if session.scalar(select(column).where(column == wanted)) is not None:
        return wanted
    pattern = _escape(wanted)
    for like in (f"%/{pattern}", f"{pattern}%", f"%/{pattern}%"):  # bare id, then prefixes
        matches = session.scalars(
            select(column)
            .where(column.like(like, escape="\\"))
            .order_by(column)
            .limit(MAX_LISTED + 1)
        ).all()
        if matches:
            break
    if len(matches) == 1:
        return matches[0]
    if matches:
        listed = ", ".join(matches[:MAX_LISTED]) + (", ..." if len(matches) > MAX_LISTED else "")
        raise NotFound(
            f"architecture id {wanted!r} is ambiguous: it matches {listed}; give the full id"
        )
    raise NotFound(
        f"no architecture {wanted!r} in the lineage database; {_suggest(session, wanted)}"
    )


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _suggest(session: Session, wanted: str) -> str:
    known = session.scalars(select(ArchitectureRow.arch_id)).all()
    # compare bare ids too: "58479e16" is a near miss of "quickstart/58479e61"
    by_key = {a: a for a in known} | {a.rsplit("/", 1)[-1]: a for a in known if "/" in a}
    close = difflib.get_close_matches(wanted, list(by_key), n=3, cutoff=0.6)
    names = list(dict.fromkeys(by_key[c] for c in close))
    if names:
        return "did you mean " + " or ".join(repr(n) for n in names) + "?"
    return "list them with: morphsearch lineage tree --search NAME"
