"""Storage contract tests: every case runs on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import pytest
from _lineage_data import MORPHISMS, arch, build
from sqlalchemy import create_engine, text

from morphsearch.errors import DatabaseError, NotFound
from morphsearch.lineage import ArchitectureIn, GrowthIn, LineageStore, open_store

TABLES = ("searches", "architectures", "edges", "trials", "metrics", "growth_events")


@pytest.fixture
def store(db_url: str) -> Iterator[LineageStore]:
    """A freshly built lineage, for tests that write."""
    with open_store(db_url, write=True) as opened:
        build(opened)
        yield opened


@pytest.fixture(scope="module")
def built(module_db_url: str) -> Iterator[LineageStore]:
    """One built lineage per backend, shared by the tests that only read (or fail to write)."""
    with open_store(module_db_url, write=True) as opened:
        build(opened)
        yield opened


def row_counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as connection:
        counts = {
            t: connection.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES
        }
    engine.dispose()
    return counts


def test_ancestors_walk_from_node_to_seed(built: LineageStore) -> None:
    path = built.ancestors("E2")
    assert [n.arch_id for n in path] == ["E2", "E", "C", "A", "S"]
    assert [n.depth for n in path] == [4, 3, 2, 1, 0]
    assert [n.kind for n in path] == ["growth", "trial", "trial", "trial", "seed"]
    assert path[0].parent_id == "E" and path[-1].parent_id is None
    assert path[3].morphisms == tuple(MORPHISMS["A"]) and path[3].trial_id == "t1"


def test_descendants_are_the_subtree_level_by_level(built: LineageStore) -> None:
    assert [n.arch_id for n in built.descendants("A")] == ["A", "C", "D", "E", "E2"]
    assert [n.arch_id for n in built.descendants("A", max_depth=1)] == ["A", "C", "D"]
    assert [n.arch_id for n in built.descendants("B")] == ["B"]
    assert {n.arch_id for n in built.descendants("S")} == {"S", "A", "B", "C", "D", "E", "E2"}


def test_best_by_metric_mode_evaluation_and_k(built: LineageStore) -> None:
    top = built.best("alpha", "val_acc", k=3)
    assert [(b.arch_id, b.value, b.evaluation) for b in top] == [
        ("E2", 0.9, 3),
        ("C", 0.85, 2),
        ("E", 0.75, 2),
    ]
    assert top[0].trial_id == "t5" and top[0].params == 450
    assert [b.arch_id for b in built.best("alpha", "val_acc", evaluation=1, k=2)] == ["C", "E"]
    lowest = built.best("alpha", "val_acc", mode="min")[0]
    assert (lowest.arch_id, lowest.value) == ("B", 0.40)
    assert built.best("alpha", "loss", mode="min")[0].arch_id == "C"  # 1 - 0.85
    assert built.best("alpha", "no-such-metric") == []
    assert [b.arch_id for b in built.best("beta", "val_acc")] == ["F"]  # searches do not mix


def test_pareto_front_against_params_and_flops(built: LineageStore) -> None:
    front = built.pareto("alpha", "val_acc")
    # E (400 params, 0.75) is dominated by C (300 params, 0.85)
    assert [(p.arch_id, p.cost, p.value) for p in front] == [
        ("B", 120, 0.55), ("A", 150, 0.60), ("D", 200, 0.70), ("C", 300, 0.85), ("E2", 450, 0.90),
    ]  # fmt: skip
    assert [p.arch_id for p in built.pareto("alpha", "val_acc", cost="flops")] == [
        "B",
        "A",
        "D",
        "C",
        "E2",
    ]
    assert built.pareto("alpha", "val_acc", cost="flops")[3].cost == 607
    # at evaluation 2 B drops to 0.40 and is dominated by nothing cheaper: still first
    front = built.pareto("alpha", "val_acc", evaluation=2)
    assert [p.arch_id for p in front] == ["B", "A", "D", "C"]
    assert [p.arch_id for p in built.pareto("alpha", "loss", mode="min")] == ["B", "A", "D", "C"]


def test_diff_is_the_morphism_script_from_the_common_ancestor(built: LineageStore) -> None:
    diff = built.diff("D", "E")
    assert diff.common_ancestor == "A"
    assert [(s.parent_id, s.child_id) for s in diff.to_a] == [("A", "D")]
    assert [(s.parent_id, s.child_id) for s in diff.to_b] == [("A", "C"), ("C", "E")]
    assert diff.to_a[0].morphisms == tuple(MORPHISMS["D"])
    assert built.diff("C", "E2").to_a == () and [s.kind for s in built.diff("C", "E2").to_b] == [
        "trial",
        "growth",
    ]
    assert built.diff("E", "E") == type(diff)("E", "E", "E", (), ())
    apart = built.diff("B", "F")  # different seeds: whole paths
    assert apart.common_ancestor is None
    assert [s.child_id for s in apart.to_a] == ["B"] and [s.child_id for s in apart.to_b] == ["F"]


def test_summary_counts_and_best(built: LineageStore) -> None:
    summary = built.summary("alpha")
    assert summary.trials_by_status == {"TERMINATED": 4, "ERROR": 1}
    assert summary.n_trials == 5 and summary.n_architectures == 7
    assert summary.best is not None and summary.best.arch_id == "E2"
    assert built.summary("alpha", "loss", "min").best.arch_id == "C"  # type: ignore[union-attr]
    assert built.summary("beta").n_architectures == 2


def test_searches_architecture_and_roots(built: LineageStore) -> None:
    assert [s.name for s in built.searches()] == ["alpha", "beta"]
    assert (
        built.searches()[0].config["lr"] == 0.1 and built.searches()[0].created.tzinfo is not None
    )
    record = built.architecture("C")
    assert (record.parent_id, record.depth, record.search, record.params) == ("A", 2, "alpha", 300)
    assert record.graph["nodes"][1]["features"] == 300 and record.weights_sha256 == "0" * 64
    assert built.roots("alpha") == ["S"] and built.roots("beta") == ["T"]


def test_records_are_frozen(built: LineageStore) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.best("alpha", "val_acc")[0].value = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.ancestors("A")[0].arch_id = "Z"  # type: ignore[misc]


def test_recording_everything_twice_adds_no_rows(db_url: str, store: LineageStore) -> None:
    before = row_counts(db_url)
    assert before == {
        "searches": 2,
        "architectures": 9,
        "edges": 7,
        "trials": 6,
        "metrics": 22,
        "growth_events": 1,
    }
    build(store)  # a resumed search replays every write
    assert row_counts(db_url) == before


def test_rerecorded_trial_updates_its_status(db_url: str, store: LineageStore) -> None:
    trial = store.record_trial("alpha", "t4", "A", arch("D"), MORPHISMS["D"], status="RUNNING")
    assert trial.status == "RUNNING" and trial.error is None and trial.node == "node-1"
    done = store.update_trial("t4", "TERMINATED")
    assert (done.status, done.parent_id, done.child_id, done.search) == (
        "TERMINATED",
        "A",
        "D",
        "alpha",
    )
    store.record_metrics("t4", 2, {"val_acc": 0.99})  # a re-reported value replaces the old one
    assert store.best("alpha", "val_acc")[0].arch_id == "D"
    assert row_counts(db_url)["metrics"] == 22


def test_failed_trial_write_leaves_nothing(db_url: str, store: LineageStore) -> None:
    before = row_counts(db_url)
    # t1 already trained A: the same trial id with a new child must fail as a whole,
    # and the new architecture inserted before the clash must be rolled back
    new_child = dataclasses.replace(arch("D"), arch_id="NEW", structure_hash="h-new")
    with pytest.raises(DatabaseError, match="t1"):
        store.record_trial("alpha", "t1", "S", new_child, MORPHISMS["A"])
    assert row_counts(db_url) == before
    with pytest.raises(NotFound):
        store.ancestors("NEW")


def test_trial_growth_and_metrics_are_written_together(store: LineageStore) -> None:
    """The search callback records a finished trial, its growth and its metrics in one
    call: all of it is there, the metrics on the grown architecture the trial kept."""
    grown = dataclasses.replace(arch("E2"), arch_id="G2", structure_hash="h-g2")
    growth = GrowthIn("D", grown, tuple(MORPHISMS["E2"]), step=7, trigger="plateau",
                      scores={"fc2": 0.5}, loss_before=0.4, loss_after=0.4)  # fmt: skip
    store.record_trial("alpha", "t7", "A", arch("D"), MORPHISMS["D"], status="TERMINATED",
                       growth=[growth], metrics=[(1, {"val_acc": 0.6}), (2, {"val_acc": 0.7})],
                       metrics_arch_id="G2")  # fmt: skip
    events = store.growth_events("t7")
    assert [(e.pre_id, e.post_id, e.step, e.trigger) for e in events] == [("D", "G2", 7, "plateau")]
    assert [(m.evaluation, m.value, m.arch_id) for m in store.metrics("t7")] == [
        (1, 0.6, "G2"), (2, 0.7, "G2")]  # fmt: skip
    assert [n.arch_id for n in store.ancestors("G2")] == ["G2", "D", "A", "S"]


def test_a_trial_whose_metrics_fail_is_not_recorded(db_url: str, store: LineageStore) -> None:
    """A failure after the trial's row was written (here: metrics of an architecture
    that does not exist) rolls the row back too: a crash between the two can no longer
    leave a finished trial without its metrics (a resumed search would not re-record it)."""
    before = row_counts(db_url)
    with pytest.raises(NotFound):
        store.record_trial("alpha", "t8", "A", arch("D"), status="TERMINATED",
                           metrics=[(1, {"val_acc": 0.6})], metrics_arch_id="nope")  # fmt: skip
    assert row_counts(db_url) == before
    with pytest.raises(NotFound):
        store.trial("t8")


def test_same_id_with_another_structure_or_parent_is_refused(store: LineageStore) -> None:
    clash = dataclasses.replace(arch("C"), structure_hash="h-other")
    with pytest.raises(DatabaseError, match="structure hash"):
        store.record_trial("alpha", "t9", "A", clash, [])
    with pytest.raises(DatabaseError, match="C"):
        store.record_trial("alpha", "t9", "B", arch("C"), [])
    with pytest.raises(NotFound):
        store.update_trial("t9", "TERMINATED")


def test_unknown_ids_raise_not_found(built: LineageStore) -> None:
    for call in (
        lambda: built.ancestors("nope"),
        lambda: built.descendants("nope"),
        lambda: built.diff("A", "nope"),
        lambda: built.best("no-search", "val_acc"),
        lambda: built.summary("no-search"),
        lambda: built.record_trial("alpha", "t9", "nope", arch("D"), []),
        lambda: built.record_trial("no-search", "t9", "S", arch("D"), []),
        lambda: built.record_metrics("no-trial", 1, {"val_acc": 1.0}),
    ):
        with pytest.raises(NotFound):
            call()
    with pytest.raises(NotFound, match="alpha"):  # the message lists known searches
        built.summary("no-search")


def test_nan_metrics_are_skipped_and_inf_kept(store: LineageStore) -> None:
    assert store.record_metrics("t1", 5, {"val_acc": math.nan, "loss": math.inf}) == 1
    assert store.best("alpha", "loss")[0].value == math.inf


def test_metrics_of_many_epochs_in_one_write_are_all_there(store: LineageStore) -> None:
    reports = [(epoch, {"val_acc": 0.5 + epoch / 100, "loss": 1.0 / epoch}) for epoch in range(1, 8)]
    assert store.record_metrics_many("t1", reports) == 14
    stored = {(m.evaluation, m.name): m.value for m in store.metrics("t1")}
    assert stored[(7, "val_acc")] == pytest.approx(0.57) and stored[(3, "loss")] == pytest.approx(1 / 3)
    assert store.record_metrics_many("t1", reports) == 14  # idempotent: replaced, not added
    assert len([m for m in store.metrics("t1") if m.evaluation in range(1, 8)]) == 14
    with pytest.raises(NotFound):
        store.record_metrics_many("no-such-trial", reports)


def test_a_re_reported_epoch_in_one_write_keeps_the_last_value(store: LineageStore) -> None:
    # a retried or resumed trial reports an epoch again; PostgreSQL refuses a multi-row
    # upsert that touches one row twice, so the rows are merged first (the last wins)
    reports = [(1, {"loss": 3.0}), (2, {"loss": 2.0}), (1, {"loss": 2.5, "acc": 0.4})]
    assert store.record_metrics_many("t1", reports) == 3
    stored = {
        (m.evaluation, m.name): m.value for m in store.metrics("t1") if m.name in {"loss", "acc"}
    }
    assert stored == {(1, "loss"): 2.5, (2, "loss"): 2.0, (1, "acc"): 0.4}


def test_read_only_store_refuses_writes(module_db_url: str, built: LineageStore) -> None:
    with open_store(module_db_url) as reader:
        assert [n.arch_id for n in reader.ancestors("C")] == ["C", "A", "S"]
        with pytest.raises(DatabaseError, match="read-only"):
            reader.create_search("gamma")


def test_seed_trial_without_parent(store: LineageStore) -> None:
    trial = store.record_trial("beta", "t-seed", None, arch("T"), status="TERMINATED")
    assert trial.parent_id is None and trial.child_id == "T"
    seed = ArchitectureIn("T", {}, "h-T", 50, 100)
    assert store.record_seed("beta", seed).depth == 0


def test_trial_metrics_and_growth_events(built: LineageStore) -> None:
    trial = built.trial("t2")
    assert (trial.parent_id, trial.child_id, trial.status, trial.error) == (
        "S",
        "B",
        "ERROR",
        "CUDA OOM",
    )
    assert trial.config == {"lr": 0.1, "trial": "t2"} and trial.node == "node-1"
    values = [(m.evaluation, m.name, m.value, m.arch_id) for m in built.metrics("t5")]
    assert values == [
        (1, "loss", pytest.approx(0.30), "E"), (1, "val_acc", 0.70, "E"),
        (2, "loss", pytest.approx(0.25), "E"), (2, "val_acc", 0.75, "E"),
        (3, "val_acc", 0.90, "E2"),
    ]  # fmt: skip
    (event,) = built.growth_events("t5")
    assert (event.pre_id, event.post_id, event.step, event.trigger) == ("E", "E2", 10, "plateau")
    assert event.scores == {"fc2": 3.5} and event.morphisms == tuple(MORPHISMS["E2"])
    assert built.growth_events("t1") == []
    for call in (
        lambda: built.trial("nope"),
        lambda: built.metrics("nope"),
        lambda: built.growth_events("nope"),
    ):
        with pytest.raises(NotFound):
            call()
