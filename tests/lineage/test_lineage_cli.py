"""``morphsearch lineage ...`` and ``morphsearch db upgrade``: tables, JSON, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _lineage_data import build, migrate_to, tables
from _lineage_pg import free_port
from sqlalchemy.engine import make_url

from morphsearch.cli import main
from morphsearch.lineage import HEAD_REVISION, open_store
from morphsearch.lineage.schema import REVISIONS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'lineage.db'}"
    with open_store(url, write=True) as store:
        build(store)
    return url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    code, out, err = run(capsys, *argv, "--json")
    assert (code, err) == (0, "")
    return json.loads(out)


# (arguments, a check of the --json document, words the table must show)
CASES = {
    "searches": (
        ["searches"],
        lambda doc: (
            [s["name"] for s in doc] == ["alpha", "beta"]
            and doc[0]["trials_by_status"]["ERROR"] == 1
        ),
        ["alpha", "beta", "ERROR 1, TERMINATED 4", "val_acc=0.9 (E2)"],
    ),
    "show-arch": (
        ["show", "C"],
        lambda doc: doc["parent_id"] == "A" and doc["graph"]["nodes"][1]["features"] == 300,
        ["deepen.identity@fc1", "/runs/C.safetensors", "2 nodes"],
    ),
    "show-search": (
        ["show", "--search", "alpha"],
        lambda doc: doc["n_architectures"] == 7 and doc["best"]["arch_id"] == "E2",
        ["ERROR 1, TERMINATED 4", "val_acc=0.9: E2 (trial t5, evaluation 3)"],
    ),
    "ancestors": (
        ["ancestors", "E2"],
        lambda doc: [n["arch_id"] for n in doc] == ["E2", "E", "C", "A", "S"],
        ["4 edges to its seed", "growth", "widen.gradmax@fc2"],
    ),
    "descendants": (
        ["descendants", "A"],
        lambda doc: [n["arch_id"] for n in doc] == ["A", "C", "D", "E", "E2"],
        ["4 architectures", "widen.split@fc1 + widen.split@fc2"],
    ),
    "best": (
        ["best", "--search", "alpha", "--top", "3"],
        lambda doc: (
            [(b["arch_id"], b["value"]) for b in doc] == [("E2", 0.9), ("C", 0.85), ("E", 0.75)]
        ),
        ["best of alpha by val_acc (max)", "E2", "0.85"],
    ),
    "best-min-evaluation": (
        ["best", "--search", "alpha", "--metric", "loss", "--mode", "min", "--evaluation", "1"],
        lambda doc: doc[0]["arch_id"] == "C" and doc[0]["evaluation"] == 1,
        ["by loss (min) at evaluation 1"],
    ),
    "pareto": (
        ["pareto", "--search", "alpha"],
        lambda doc: [p["arch_id"] for p in doc] == ["B", "A", "D", "C", "E2"],
        ["Pareto front of alpha", "against params"],
    ),
    "pareto-flops": (
        ["pareto", "--search", "alpha", "--cost", "flops"],
        lambda doc: doc[3] == {"arch_id": "C", "cost": 607, "value": 0.85},
        ["against flops", "607"],
    ),
    "diff": (
        ["diff", "D", "E"],
        lambda doc: (
            doc["common_ancestor"] == "A" and [s["child_id"] for s in doc["to_b"]] == ["C", "E"]
        ),
        ["from common ancestor A to D and E", "deepen.identity@fc1"],
    ),
    "tree": (
        ["tree", "--search", "alpha"],
        lambda doc: (
            doc[0]["arch_id"] == "S" and [c["arch_id"] for c in doc[0]["children"]] == ["A", "B"]
        ),
        ["lineage of search alpha", "└── E2  params=450  (growth: widen.gradmax@fc2)"],
    ),
    "tree-under": (
        ["tree", "C", "--max-depth", "1"],
        lambda doc: (
            [c["arch_id"] for c in doc[0]["children"]] == ["E"]
            and doc[0]["children"][0]["children"] == []
        ),
        ["lineage under C", "E  params=400"],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_lineage_command_json(capsys: pytest.CaptureFixture[str], built: str, case: str) -> None:
    argv, check, _ = CASES[case]
    assert check(run_json(capsys, "lineage", *argv, "--db", built))


@pytest.mark.parametrize("case", CASES)
def test_lineage_command_table(capsys: pytest.CaptureFixture[str], built: str, case: str) -> None:
    argv, _, words = CASES[case]
    code, out, err = run(capsys, "lineage", *argv, "--db", built)
    assert (code, err) == (0, "")
    for word in words:
        assert word in out, f"{word!r} missing from:\n{out}"


def test_tree_table_nests_children_under_parents(
    capsys: pytest.CaptureFixture[str], built: str
) -> None:
    _, out, _ = run(capsys, "lineage", "tree", "--search", "alpha", "--db", built)
    indent = {
        line.split("  params")[0].lstrip("│├└─ "): len(line) - len(line.lstrip("│├└─ "))
        for line in out.splitlines()[1:]
    }
    assert indent["S"] < indent["A"] < indent["C"] < indent["E"] < indent["E2"]
    assert indent["A"] == indent["B"] and indent["C"] == indent["D"]
    _, out, _ = run(
        capsys, "lineage", "tree", "--search", "alpha", "--max-nodes", "3", "--db", built
    )
    assert "4 more architectures (raise --max-nodes)" in out


def expect_error(capsys: pytest.CaptureFixture[str], *argv: str, match: str) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("morphsearch: error: "), err
    assert match in err, err
    assert "s3cret" not in err
    return err


def test_unknown_ids_exit_2_with_one_line(capsys: pytest.CaptureFixture[str], built: str) -> None:
    expect_error(
        capsys, "lineage", "ancestors", "nope", "--db", built, match="no architecture 'nope'"
    )
    expect_error(
        capsys, "lineage", "diff", "A", "nope", "--db", built, match="no architecture 'nope'"
    )
    expect_error(
        capsys,
        "lineage",
        "best",
        "--search",
        "zeta",
        "--db",
        built,
        match="known searches: beta, alpha",
    )
    expect_error(capsys, "lineage", "best", "--db", built, match="choose one with --search NAME")
    expect_error(
        capsys,
        "lineage",
        "pareto",
        "--search",
        "zeta",
        "--db",
        built,
        match="no search named 'zeta'",
    )
    expect_error(capsys, "lineage", "show", "nope", "--db", built, match="no architecture 'nope'")


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("postgresql+psycopg://u:s3cret@[bad/db", "u:***@"),
        ("mysql://root:s3cret@localhost/db", "unsupported database backend"),
        ("::::", "malformed database URL"),
    ],
)
def test_bad_urls_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], url: str, match: str
) -> None:
    expect_error(capsys, "lineage", "searches", "--db", url, match=match)


def test_unreachable_server_hides_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql://user:s3cret@127.0.0.1:{free_port()}/lineage"
    expect_error(
        capsys, "lineage", "searches", "--db", url, match="cannot reach the lineage database"
    )
    expect_error(capsys, "db", "upgrade", "--db", url, match="user:***@127.0.0.1")


def test_missing_sqlite_file_is_reported_not_created(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "nothing-here.db"
    err = expect_error(
        capsys, "lineage", "tree", "--db", f"sqlite:///{path}", match="does not exist"
    )
    assert f"morphsearch db upgrade --db sqlite:///{path}" in err
    assert list(tmp_path.iterdir()) == []


def test_outdated_schema_exit_2_then_db_upgrade_fixes_it(
    capsys: pytest.CaptureFixture[str], db_url: str
) -> None:
    url = (
        make_url(db_url).set(password="s3cret").render_as_string(hide_password=False)
        if "postgresql" in db_url
        else db_url
    )
    migrate_to(db_url, REVISIONS[0])
    shown = make_url(url).render_as_string(hide_password=True)
    expect_error(
        capsys,
        "lineage",
        "searches",
        "--db",
        url,
        match=f"upgrade it with: morphsearch db upgrade --db {shown}",
    )
    assert "growth_events" not in tables(db_url)
    code, out, err = run(capsys, "db", "upgrade", "--db", url)
    assert (code, err) == (
        0,
        "",
    ) and out == f"lineage database {shown} is at schema {HEAD_REVISION}\n"
    assert run_json(capsys, "lineage", "searches", "--db", url) == []


def test_db_upgrade_creates_a_new_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    assert run(capsys, "db", "upgrade", "--db", url)[0] == 0
    assert "growth_events" in tables(url)
    assert run(capsys, "db", "upgrade", "--db", url)[0] == 0  # a second upgrade is a no-op


def test_db_url_from_environment(
    capsys: pytest.CaptureFixture[str], built: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MORPHSEARCH_DB", built)
    assert [n["arch_id"] for n in run_json(capsys, "lineage", "ancestors", "C")] == ["C", "A", "S"]  # type: ignore[union-attr]


def test_default_db_is_morphsearch_db_in_cwd(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MORPHSEARCH_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    expect_error(
        capsys, "lineage", "searches", match="lineage database morphsearch.db does not exist"
    )
    assert list(tmp_path.iterdir()) == []


def test_cli_on_both_backends_hides_passwords(
    capsys: pytest.CaptureFixture[str], db_url: str
) -> None:
    url = (
        make_url(db_url).set(password="s3cret").render_as_string(hide_password=False)
        if "postgresql" in db_url
        else db_url
    )
    with open_store(url, write=True) as store:
        build(store)
    assert [
        p["arch_id"]
        for p in run_json(capsys, "lineage", "pareto", "--search", "alpha", "--db", url)
    ] == ["B", "A", "D", "C", "E2"]  # type: ignore[index]
    code, out, err = run(capsys, "lineage", "searches", "--db", url)
    assert (code, err) == (0, "") and "s3cret" not in out and "alpha" in out
    expect_error(
        capsys, "lineage", "descendants", "nope", "--db", url, match="no architecture 'nope'"
    )


def test_lineage_cli_imports_no_torch_or_ray_and_answers_fast(built: str) -> None:
    probe = (
        "import sys, time; t = time.perf_counter(); from morphsearch.cli import main; "
        f"code = main(['lineage', 'ancestors', 'E2', '--db', {built!r}, '--json']); "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray', 'optuna', 'numpy') or m.startswith('morphsearch.arch')); "
        "print('PROBE', code, heavy, time.perf_counter() - t, file=sys.stderr)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    wall = time.perf_counter() - started
    line = next(line for line in result.stderr.splitlines() if line.startswith("PROBE"))
    assert line.startswith("PROBE 0 [] "), line
    assert [n["arch_id"] for n in json.loads(result.stdout)] == ["E2", "E", "C", "A", "S"]
    # well under a second on an idle machine; generous here because CI cores are shared
    assert wall < 5, f"lineage ancestors took {wall:.2f} s"


def test_objectives_in_a_search_config_define_best(tmp_path: Path, capsys) -> None:
    # Search configs store their objectives as a list; lineage must rank by the first one.
    from morphsearch.lineage import ArchitectureIn

    url = f"sqlite:///{tmp_path / 'obj.db'}"
    with open_store(url, write=True) as store:
        store.create_search("s", {"objectives": [{"metric": "val_loss", "mode": "min"}]})
        for i, loss in enumerate([0.5, 0.2, 0.9]):
            arch = ArchitectureIn(f"a{i}", {"nodes": []}, f"h{i}", params=10 * (i + 1), flops=1)
            store.record_trial("s", f"t{i}", None, arch, status="TERMINATED")
            store.record_metrics(f"t{i}", 1, {"val_loss": loss})
    doc = run_json(capsys, "lineage", "best", "--db", url, "--search", "s")
    assert doc[0]["arch_id"] == "a1"
    summary = run_json(capsys, "lineage", "show", "--db", url, "--search", "s")
    assert summary["best"]["arch_id"] == "a1"
