"""Fixtures of the lineage tests: one throwaway PostgreSQL server, and ``db_url``.

``db_url`` is parametrised over SQLite and PostgreSQL, so every storage contract
test runs on both (like Optuna's storage tests). Each test gets a fresh, empty
database. PostgreSQL is a real server: ``initdb`` + ``pg_ctl`` into a temporary
directory on a free loopback port, or the server named by ``MORPHSEARCH_TEST_PG_URL``.
Without PostgreSQL binaries the PostgreSQL cases are skipped, unless ``CI`` is set,
where they fail: CI must run them.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _lineage_pg import PostgresServer, find_pg_bin

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """URL of a PostgreSQL database with the right to CREATE DATABASE."""
    existing = os.environ.get("MORPHSEARCH_TEST_PG_URL")
    if existing:
        yield existing
        return
    bin_dir = find_pg_bin()
    if bin_dir is None:
        reason = (
            "PostgreSQL server binaries (initdb, pg_ctl) not found under "
            "/usr/lib/postgresql/*/bin: apt-get install -y postgresql, or set "
            "MORPHSEARCH_TEST_PG_URL"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests: {reason}")
        pytest.skip(reason)
    with PostgresServer(bin_dir) as server:
        yield server.url("postgres")


def _fresh_pg_database(admin_url: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"lineage_{os.getpid()}_{next(_counter)}"
    admin = make_url(admin_url).set(drivername="postgresql+psycopg")
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin.set(database=name).render_as_string(hide_password=False)


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _empty_database(request: pytest.FixtureRequest, directory: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{directory / 'lineage.db'}"
    return _fresh_pg_database(request.getfixturevalue("pg_admin_url"))


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of a new, empty lineage database on each backend (no schema yet)."""
    return _empty_database(request, tmp_path)


@pytest.fixture(scope="module", params=BACKENDS)
def module_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Like ``db_url``, but shared by a module's tests (for read-only tests)."""
    return _empty_database(request, tmp_path_factory.mktemp("lineage"))
