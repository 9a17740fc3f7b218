"""The SQLite connection set-up: WAL switched on safely while another writer holds the file."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from morphsearch.cli import main
from morphsearch.errors import DatabaseUnreachable
from morphsearch.lineage import open_store
from morphsearch.lineage.database import Database


def test_wal_switch_waits_for_a_writer_instead_of_failing(tmp_path: Path) -> None:
    # Another connection holds a write lock on a rollback-journal file. Switching a
    # file to WAL then fails at once with "database is locked" (SQLite skips its
    # busy handler there): the flake of the eight-writer test. A writer must wait.
    path = tmp_path / "lineage.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN")
    holder.execute("INSERT INTO t VALUES (1)")
    releaser = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    releaser.start()
    db = Database(f"sqlite:///{path}", write=True)
    try:
        started = time.monotonic()
        with db.engine.connect() as connection:
            mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
        assert mode == "wal"
        assert time.monotonic() - started < 30  # waited for the commit, not the 60 s timeout
    finally:
        releaser.join()
        holder.close()
        db.dispose()


@pytest.mark.parametrize("argv", [["db", "upgrade", "--db"], ["lineage", "searches", "--db"]])
def test_sqlite_file_in_a_missing_folder_names_the_mkdir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    folder = tmp_path / "no" / "such"
    url = f"sqlite:///{folder}/lineage.db"
    with pytest.raises(DatabaseUnreachable, match=f"mkdir -p {folder}"):
        open_store(url, write=True)
    assert main([*argv, url]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"mkdir -p {folder}" in err
    assert not (tmp_path / "no").exists()


def test_a_file_that_is_not_a_database_says_so_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database" * 100)
    for write in (False, True):
        with pytest.raises(DatabaseUnreachable, match="not a SQLite database; point --db"):
            open_store(f"sqlite:///{path}", write=write)
    assert main(["db", "upgrade", "--db", f"sqlite:///{path}"]) == 2
    assert "not a SQLite database" in capsys.readouterr().err
    assert path.read_bytes().startswith(b"these are my notes")
