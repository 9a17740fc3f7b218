"""Checks a search passes before Ray starts, so a bad start costs seconds and writes nothing.

:func:`check_config` is the one entry point: ``morphsearch search`` runs every check
before it starts Ray. ``morphsearch submit`` runs it with ``resources=False`` before it
contacts the cluster: the config's own checks (fields, morphisms, data, seed graph, the
database URL's syntax), with the same messages as search; the database, storage and
name are the cluster's, which the submitting machine may not reach (a PostgreSQL
server inside the cluster, a relative SQLite path that lives in the job's folder), so
the job checks those itself, on the cluster, before its Ray work starts.

Each check reads only: the lineage database is opened without creating its schema,
the storage folder is probed with a temporary file that is removed at once, and a name
already used by a search is refused unless the user asked to resume it. The morphisms,
the data and the seed graph are checked by loading them
(:mod:`morphsearch.search.inputs`, which imports torch).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from morphsearch.errors import SearchError
from morphsearch.lineage import models
from morphsearch.lineage.database import Database, parse_url, sqlite_path
from morphsearch.lineage.schema import EMPTY, HEAD_REVISION, read_revision, refuse
from morphsearch.search.inputs import SearchInputs, absolute, check_morphisms, load_inputs

if TYPE_CHECKING:  # pragma: no cover
    from morphsearch.search.config import SearchConfig

__all__ = ["check_config", "check_database", "check_name", "check_storage", "preflight"]


def check_config(
    config: SearchConfig, *, resume: bool = False, resources: bool = True
) -> SearchInputs:
    """Everything ``search`` and ``submit`` refuse, checked before Ray or a cluster.

    In order: the morphisms, growth trigger and scorer the config names are registered;
    the database, storage and search name pass :func:`preflight`; the dataset loads and
    the seed graph builds and fits it.

    Args:
        config: the validated config, command-line overrides applied.
        resume: the user asked to resume the search ``config.name``.
        resources: also check the database, storage and name (:func:`preflight`);
            ``False`` checks only the database URL's syntax (``submit``).

    Returns:
        The loaded dataset and seed (the search starts from them; submit drops them).

    Raises:
        ConfigError: an unknown morphism, trigger or scorer; data or a seed graph that
            cannot be loaded or do not fit (the message names the config field).
        DatabaseUnreachable / DatabaseError / SchemaOutdated: see :func:`preflight`.
        SearchError: storage not writable; the name taken, or nothing to resume.
    """
    check_morphisms(config)
    if resources:
        preflight(config.database, absolute(config.storage), config.name or "search",
                  resume=resume)  # fmt: skip
    else:
        parse_url(config.database)
    return load_inputs(config)


def preflight(database: str, storage: str, name: str, *, resume: bool) -> None:
    """Every check that needs neither Ray nor torch, cheapest first.

    Args:
        database: the lineage database URL.
        storage: the absolute storage path or URI (``s3://`` is not probed).
        name: the search name.
        resume: the user asked to resume ``name``.

    Raises:
        DatabaseUnreachable: malformed URL, missing folder, server unreachable.
        DatabaseError: not a database, or not a morphsearch one; schema mismatch.
        SearchError: storage not writable; ``name`` taken (without ``resume``) or
            nothing to resume (with it).
    """
    recorded = check_database(database, name)
    check_storage(storage)
    check_name(name, database, storage, recorded=recorded, resume=resume)


def check_database(url: str, name: str) -> bool:
    """The database can be used by a search; returns whether it records search ``name``.

    A SQLite file that does not exist yet is fine when its folder does (the search
    creates it); an existing database must be empty or hold the current schema.
    """
    db = Database(url, write=False)  # malformed URL, missing SQLite folder: raises here
    try:
        path = sqlite_path(db.url)
        if path is not None and not path.exists():
            _probe_folder(path.parent, what=f"the lineage database folder of {db.display_url}")
            return False
        try:
            with db.engine.connect() as connection:
                revision = read_revision(connection)
                if revision not in (EMPTY, HEAD_REVISION):
                    refuse(db, revision)
                if revision == EMPTY:
                    return False
                query = select(models.SearchRow.name).where(models.SearchRow.name == name)
                return connection.execute(query).first() is not None
        except SQLAlchemyError as exc:
            raise db.translate(exc, connecting=True) from exc
    finally:
        db.dispose()


def check_storage(storage: str) -> None:
    """A local storage folder exists or can be created, and can be written."""
    if "://" in storage and not storage.startswith("file://"):
        return  # s3:// and other remote stores: the first write reports its own error
    path = Path(storage.removeprefix("file://"))
    if path.exists() and not path.is_dir():
        raise SearchError(f"storage {path} is a file, not a folder; pass --storage FOLDER")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SearchError(
            f"storage {path} cannot be created: {existing} is a file; pass --storage FOLDER"
        )
    _probe_folder(existing, what=f"storage {path}")


def _probe_folder(folder: Path, *, what: str) -> None:
    """Create and remove a file in ``folder`` (``os.access`` says yes to root on a
    read-only mount)."""
    if not folder.is_dir():
        raise SearchError(f"{what}: {folder} is not a folder; create it or choose another")
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".morphsearch-probe-"):
            pass
    except OSError as exc:
        raise SearchError(
            f"{what}: cannot write in {folder} ({exc.strerror}); choose a writable folder "
            "(--storage / --db) or fix its permissions"
        ) from None


def check_name(name: str, database: str, storage: str, *, recorded: bool, resume: bool) -> None:
    """A new search does not join an old one; a resumed one has something to resume."""
    from ray.tune import Tuner  # reads files only; Ray itself does not start

    runs = storage.rstrip("/") + "/" + name
    if resume:
        if not Tuner.can_restore(runs):
            raise SearchError(
                f"nothing to resume at {runs}: no search {name!r} was started with this "
                "storage; run without --resume, or pass the --storage it used"
            )
        return
    local = None if "://" in storage else Path(runs)
    if recorded or (local is not None and local.exists()):
        where = (
            f"the lineage database {Database(database, write=False).display_url}"
            if recorded
            else f"storage {local}"
        )
        raise SearchError(
            f"a search named {name!r} already exists in {where}; continue it with --resume, "
            "or start a new one with --name NEW_NAME"
        )
