"""Migrations, version checks and connection errors, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from _lineage_data import migrate_to, tables
from _lineage_pg import free_port
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from morphsearch import lineage
from morphsearch.errors import DatabaseError, DatabaseUnreachable, SchemaOutdated
from morphsearch.lineage import HEAD_REVISION, open_store
from morphsearch.lineage.models import Base
from morphsearch.lineage.schema import REVISIONS, alembic_config


def with_password(url: str, password: str) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


def test_revisions_constant_matches_the_migration_scripts() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    history = [rev.revision for rev in reversed(list(script.walk_revisions()))]
    assert tuple(history) == REVISIONS and script.get_current_head() == HEAD_REVISION


def test_first_write_open_creates_the_schema_matching_the_models(db_url: str) -> None:
    assert tables(db_url) == set()
    open_store(db_url, write=True).close()
    assert {"searches", "architectures", "edges", "trials", "metrics", "growth_events"} <= tables(
        db_url
    )
    engine = create_engine(db_url)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        assert (
            connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            == HEAD_REVISION
        )
    engine.dispose()
    open_store(db_url, write=True).close()  # opening again changes nothing
    open_store(db_url).close()


def test_read_only_open_of_an_empty_database_writes_nothing(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        Path(make_url(db_url).database or "").touch()  # an existing, empty file
    with pytest.raises(SchemaOutdated, match="morphsearch db upgrade --db"):
        open_store(db_url)
    assert tables(db_url) == set()


def test_outdated_schema_is_refused_with_the_exact_command(db_url: str) -> None:
    url = with_password(db_url, "s3cret") if "postgresql" in db_url else db_url
    migrate_to(db_url, REVISIONS[0])
    expected = f"morphsearch db upgrade --db {make_url(url).render_as_string(hide_password=True)}"
    for write in (True, False):
        with pytest.raises(SchemaOutdated) as info:
            open_store(url, write=write)
        assert str(info.value).endswith(expected) and "s3cret" not in str(info.value)
    assert "growth_events" not in tables(db_url)  # refused: nothing upgraded or written
    assert lineage.upgrade(url) == HEAD_REVISION
    with open_store(url, write=True) as store:
        store.create_search("after-upgrade")


def test_newer_or_foreign_schema_is_refused(db_url: str) -> None:
    open_store(db_url, write=True).close()
    engine = create_engine(db_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(DatabaseError, match="newer than this morphsearch") as info:
        open_store(db_url, write=True)
    assert not isinstance(info.value, SchemaOutdated)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))
    for write in (True, False):
        with pytest.raises(DatabaseError, match="not a morphsearch lineage database"):
            open_store(db_url, write=write)
    with pytest.raises(DatabaseError, match="not a morphsearch lineage database"):
        lineage.upgrade(db_url)
    engine.dispose()


def test_missing_sqlite_file_is_not_created_by_a_read(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    with pytest.raises(DatabaseUnreachable, match="does not exist") as info:
        open_store(f"sqlite:///{path}")
    assert f"morphsearch db upgrade --db sqlite:///{path}" in str(info.value)
    assert not path.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url",
    ["not a url", "mysql://root:s3cret@localhost/db", "postgresql+psycopg://u:s3cret@[bad/db"],
)
def test_malformed_or_unsupported_urls(url: str) -> None:
    with pytest.raises(DatabaseUnreachable) as info:
        open_store(url)
    assert "s3cret" not in str(info.value) and "\n" not in str(info.value)


def test_unreachable_server_fails_fast_without_the_password() -> None:
    url = f"postgresql://user:s3cret@127.0.0.1:{free_port()}/lineage"
    started = time.monotonic()
    with pytest.raises(DatabaseUnreachable) as info:
        open_store(url, write=True)
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert "s3cret" not in message and "user:***@127.0.0.1" in message


@pytest.mark.postgres
def test_wrong_database_name_is_unreachable(pg_admin_url: str) -> None:
    url = make_url(pg_admin_url).set(database="no_such_db", password="s3cret")
    with pytest.raises(DatabaseUnreachable) as info:
        open_store(url.render_as_string(hide_password=False))
    assert "s3cret" not in str(info.value)
