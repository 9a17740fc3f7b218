"""Connections to the lineage database: URLs, engines and the one session scope.

This is the only module that makes sessions. :meth:`Database.session` commits on
success, rolls back on any error and turns every ``SQLAlchemyError`` into a
:class:`~morphsearch.errors.DatabaseError`, with the URL's password hidden.
"""

from __future__ import annotations

import logging
import os
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from morphsearch.errors import DatabaseError, DatabaseUnreachable

T = TypeVar("T")
log = logging.getLogger(__name__)

__all__ = ["DEFAULT_URL", "ENV_VAR", "Database", "parse_url", "redact", "safe_url"]

DEFAULT_URL = "sqlite:///morphsearch.db"
ENV_VAR = "MORPHSEARCH_DB"
SQLITE_BUSY_TIMEOUT_S = 60.0  # writers on one file queue up behind each other
PG_CONNECT_TIMEOUT_S = 5  # an unreachable server answers in seconds, not minutes

_PASSWORD_IN_URL = re.compile(r"(://[^:/@]*:)[^@]*@")


def redact(text: str) -> str:
    """Hide any ``user:password@`` password inside free text (e.g. a malformed URL)."""
    return _PASSWORD_IN_URL.sub(r"\1***@", text)


def parse_url(url: str | URL) -> URL:
    """Parse a database URL, defaulting bare ``postgresql://`` to the psycopg 3 driver.

    Raises:
        DatabaseUnreachable: the URL is malformed or names an unsupported backend.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUnreachable(
            f"malformed database URL {redact(str(url))!r}: expected "
            "sqlite:///path/to/file.db or postgresql+psycopg://user:password@host/db"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise DatabaseUnreachable(
            f"unsupported database backend in {safe_url(parsed)}: use sqlite:/// or "
            "postgresql+psycopg://"
        )
    return parsed


def safe_url(url: str | URL) -> str:
    """The URL as text with its password replaced by ``***``."""
    if isinstance(url, str):
        try:
            url = make_url(url)
        except ArgumentError:
            return redact(str(url))
    return url.render_as_string(hide_password=True)


def sqlite_path(url: URL) -> Path | None:
    """The file behind a SQLite URL, or ``None`` for an in-memory database."""
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):  # sqlite URI filename
        database = database[len("file:") :].split("?", 1)[0]
    return Path(database)


class Database:
    """An engine on one lineage database and the session scope over it.

    Args:
        url: the database URL (password allowed; it is never shown).
        write: open for writing. SQLite write transactions start with
            ``BEGIN IMMEDIATE`` so concurrent writers queue on the busy timeout
            instead of failing when a reader upgrades to a writer.

    Raises:
        DatabaseUnreachable: the URL is malformed or its driver is missing.
    """

    def __init__(self, url: str | URL, *, write: bool) -> None:
        self.url = parse_url(url)
        self.display_url = safe_url(self.url)
        self.write = write
        self.backend = self.url.get_backend_name()
        _check_sqlite_folder(self.url, self.display_url)
        try:
            self.engine = self._create_engine()
        except (NoSuchModuleError, ImportError) as exc:
            raise DatabaseUnreachable(
                f"no driver for {self.display_url} ({exc}); install morphsearch[postgres]"
            ) from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def _create_engine(self) -> Engine:
        if self.backend == "sqlite":
            return self._create_sqlite_engine()
        args: dict[str, Any] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
        return create_engine(self.url, connect_args=args, pool_pre_ping=True)

    def _create_sqlite_engine(self) -> Engine:
        # NullPool: a CLI query or a Tune callback opens few connections, and no
        # pooled connection survives a fork or keeps the file locked.
        engine = create_engine(
            self.url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S}, poolclass=NullPool
        )
        write = self.write

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Take transaction control away from pysqlite, which would otherwise
            # begin lazily and break BEGIN IMMEDIATE and transactional DDL.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if write:
                _ensure_wal(cursor)
                cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            if write:
                _begin_immediate(connection)
            else:
                connection.exec_driver_sql("BEGIN")

        return engine

    def run(self, action: Callable[[Session], T], *, retry_s: float = 0.0) -> T:
        """``action`` in one :meth:`session`; for ``retry_s`` seconds, run again (with
        backoff) when the connection is lost or refused (the server restarting): safe
        because the store's calls are each one idempotent transaction."""
        deadline = time.monotonic() + retry_s
        delay = 0.1
        while True:
            try:
                with self.session() as session:
                    return action(session)
            except DatabaseError as exc:
                if not lost_connection(exc.__cause__) or time.monotonic() + delay > deadline:
                    raise
                log.warning("lineage database %s: connection lost, retrying", self.display_url)
                self.dispose()
                time.sleep(delay)
                delay = min(2 * delay, 2.0)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any exception.

        Raises:
            DatabaseUnreachable: the database cannot be connected to.
            DatabaseError: any other database failure (the transaction is rolled back).
        """
        session = self._sessions()
        try:
            yield session
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            raise self.translate(exc) from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def translate(self, exc: SQLAlchemyError, *, connecting: bool = False) -> DatabaseError:
        """A one-line domain error for a SQLAlchemy error, password hidden.

        Args:
            connecting: the error came from opening a connection (so: unreachable).
        """
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        reason = redact(detail[0] if detail else type(exc).__name__)
        if self.url.password:
            reason = reason.replace(str(self.url.password), "***")
        fix = _fix_for(reason)
        if fix is not None:
            return DatabaseUnreachable(f"lineage database {self.display_url}: {reason}; {fix}")
        if isinstance(exc, OperationalError) and (connecting or _is_connect_failure(reason)):
            return DatabaseUnreachable(
                f"cannot reach the lineage database {self.display_url}: {reason}"
            )
        return DatabaseError(f"lineage database {self.display_url} failed: {reason}")

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _begin_immediate(connection: Any) -> None:
    """``BEGIN IMMEDIATE``, retried after short random sleeps until the busy timeout.

    SQLite's own busy handler backs off to 100 ms sleeps, so queued writer
    processes sleep while the lock is free; retrying every few milliseconds keeps
    the write lock in use (one measurement, 8 writer processes on a busy 2-core
    machine: 11.4 s with SQLite's handler, 8.7 s with this loop).
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    connection.exec_driver_sql("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.0005, 0.004))
    finally:
        connection.exec_driver_sql(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")


def _check_sqlite_folder(url: URL, display_url: str) -> None:
    """SQLite cannot create a file in a missing folder: say so, with the command."""
    path = sqlite_path(url)
    if path is not None and not path.parent.is_dir():
        raise DatabaseUnreachable(
            f"lineage database {display_url}: folder {path.parent} does not exist; create it "
            f"with: mkdir -p {path.parent} (or point --db at a file in an existing folder)"
        )


# driver messages whose cause the user can fix, and the fix
_FIXES = {
    "file is not a database": (
        "that file is not a SQLite database; point --db at a lineage database or a new file name"
    ),
    "unable to open database file": (
        "check that its folder exists and is writable, or point --db elsewhere"
    ),
    "attempt to write a readonly database": (
        "the file or its folder is read-only; fix the permissions or point --db elsewhere"
    ),
}


def _fix_for(reason: str) -> str | None:
    lowered = reason.lower()
    return next((fix for marker, fix in _FIXES.items() if marker in lowered), None)


def _ensure_wal(cursor: Any) -> None:
    """Put the file in WAL mode unless it already is, retrying while it is locked.

    WAL is persistent in the file, so only the first writer of a new file switches
    it; later connections only read the mode. The switch needs an exclusive lock,
    and SQLite answers "database is locked" at once, without its busy handler, when
    two fresh connections try it together (deadlock avoidance), so retry here until
    the busy timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() not in ("wal", "memory"):
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.001, 0.01))


_CONNECT_FAILURES = (
    "connection",
    "could not connect",
    "unable to open database",
    "could not translate host",
    "resolve host",
    "timeout expired",
    "password authentication failed",
    "does not exist",
    "no such host",
)


def lost_connection(exc: BaseException | None) -> bool:
    """Whether a SQLAlchemy error means the server is gone or refusing connections
    (worth retrying the transaction), not that the statement or the data is wrong."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    reason = str(getattr(exc, "orig", None) or exc).lower()
    return any(marker in reason for marker in _LOST_MARKERS)


# PostgreSQL's words for a server that is restarting, shut down or cut off (not for a
# wrong password, host or database name: those stay wrong however often one retries)
_LOST_MARKERS = (
    "connection refused",
    "could not connect",
    "no connection to the server",
    "timeout expired",
    "server closed the connection",
    "terminating connection",
    "the database system is shutting down",
    "the database system is starting up",
    "connection already closed",
    "consuming input failed",
)


def _is_connect_failure(reason: str) -> bool:
    lowered = reason.lower()
    return any(marker in lowered for marker in _CONNECT_FAILURES)


def resolve_url(url: str | None) -> str:
    """The URL to use: the given one, else ``$MORPHSEARCH_DB``, else the default file."""
    return url or os.environ.get(ENV_VAR) or DEFAULT_URL
