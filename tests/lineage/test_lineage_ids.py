"""Ids as users type them: the bare trial id progress lines print, prefixes, near misses."""

from __future__ import annotations

from dataclasses import replace

import pytest
from _lineage_data import arch

from morphsearch.cli import main
from morphsearch.errors import NotFound
from morphsearch.lineage import open_store


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('ids') / 'lineage.db'}"
    with open_store(url, write=True) as store:
        for search in ("quick", "other"):
            store.create_search(search, {})
            store.record_seed(search, replace(arch("S"), arch_id=f"{search}/seed"))
        for trial in ("58479e61", "58479e99", "a1b2c3d4"):
            store.record_trial(
                "quick", trial, "quick/seed", replace(arch("A"), arch_id=f"quick/{trial}"), []
            )
    return url


@pytest.mark.parametrize(
    ("typed", "full"),
    [
        ("quick/58479e61", "quick/58479e61"),  # the full id, as before
        ("58479e61", "quick/58479e61"),  # the bare id a progress line prints
        ("a1b2", "quick/a1b2c3d4"),  # a unique prefix of a bare id
        ("quick/a1", "quick/a1b2c3d4"),  # a unique prefix of a full id
    ],
)
def test_ids_resolve_when_unambiguous(url: str, typed: str, full: str) -> None:
    with open_store(url) as store:
        assert store.resolve_arch_id(typed) == full


def test_ambiguous_ids_list_the_candidates(url: str) -> None:
    with open_store(url) as store:
        with pytest.raises(NotFound, match=r"ambiguous.*quick/58479e61, quick/58479e99"):
            store.resolve_arch_id("58479")
        with pytest.raises(NotFound, match=r"ambiguous.*other/seed, quick/seed"):
            store.resolve_arch_id("seed")


def test_a_near_miss_gets_did_you_mean(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lineage", "ancestors", "58479e16", "--db", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'quick/58479e61'" in err


def test_commands_take_the_bare_id(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lineage", "ancestors", "58479e61", "--db", url, "--json"]) == 0
    out = capsys.readouterr().out
    assert "quick/58479e61" in out and "quick/seed" in out
    assert main(["lineage", "diff", "58479e61", "a1b2c3d4", "--db", url, "--json"]) == 0
    assert main(["lineage", "show", "a1b2c3d4", "--db", url, "--json"]) == 0
    assert "quick/a1b2c3d4" in capsys.readouterr().out


def test_store_lookups_stay_exact(url: str) -> None:
    with open_store(url) as store, pytest.raises(NotFound):
        store.architecture("58479e61")  # only commands resolve; resume must not guess


def test_best_and_show_explain_evaluation(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with open_store(url, write=True) as store:
        store.record_metrics("58479e61", 3, {"val_accuracy": 0.5})
    for argv in (["best", "--search", "quick", "--metric", "val_accuracy"],
                 ["show", "--search", "quick", "--metric", "val_accuracy"]):  # fmt: skip
        assert main(["lineage", *argv, "--db", url]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert "evaluation: the index of the evaluation at which the trial measured" in out, argv
