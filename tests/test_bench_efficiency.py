"""bench/search_efficiency.py's logic without Ray: the scratch CNN space, the curves,
compute ratios and bootstrap intervals, and the morphsearch config it runs."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from _efficiency_report import (  # noqa: E402
    REFERENCE,
    CpuMeter,
    Run,
    TrialRow,
    bootstrap_median,
    merge,
    outcomes,
    seed_table,
    spread,
    table,
)
from _efficiency_space import (  # noqa: E402
    KERNELS,
    POOLS,
    ScratchSpace,
    grid,
    layers_of,
    scratch_cnn,
)


@pytest.mark.parametrize("shape", [(1, 40), (1, 8, 8)])
def test_every_grid_point_builds_a_cnn_that_runs(shape: tuple[int, ...]) -> None:
    points = grid(len(shape) - 1)
    assert len(points) == 3 * 3 * len(KERNELS[len(shape) - 1]) * len(POOLS)
    x = torch.randn(3, *shape)
    for convs, pool in points:
        arch = scratch_cnn(shape, convs, pool, 10, seed=1)
        assert tuple(arch.input_shape) == shape
        assert arch.to_module()(x).shape == (3, 10)
    # pooling halves the resolution: 'each' after every conv, 'end' once
    convs = [(8, 3)] * 3
    size = {p: scratch_cnn(shape, convs, p, 10).num_params for p in POOLS}
    assert size["none"] > size["end"] > size["each"]


def test_sampled_configs_are_seeded_and_build() -> None:
    def draw(seed: int, spatial: int) -> list[dict]:
        space = ScratchSpace(spatial, (0.002, 0.02), seed=seed)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        out = []
        for _ in range(12):
            trial = study.ask()
            out.append({**space(trial), **trial.params})
            study.tell(trial, 0.5)
        return out

    for spatial, shape in ((1, (1, 40)), (2, (1, 8, 8))):
        configs = draw(3, spatial)
        assert configs == draw(3, spatial)  # a repeat samples the same networks
        assert [c["trial_seed"] for c in configs] == [30_000 + i for i in range(12)]
        for config in configs:
            assert 0.002 <= config["lr"] <= 0.02 and config["lr_schedule"] == "cosine"
            convs, pool = layers_of(config)
            assert 1 <= len(convs) <= 3 and pool in POOLS
            assert all(4 <= c <= 64 and k in KERNELS[spatial] for c, k in convs)
            arch = scratch_cnn(shape, convs, pool, 10, seed=config["trial_seed"])
            assert arch.to_module()(torch.randn(2, *shape)).shape == (2, 10)


def _run(method: str, points: list[tuple[float, float, float]], seed: int = 0,
         repeat: int = 0) -> Run:  # fmt: skip
    """A run whose trials end 1 s apart with (FLOPs, val, test) each."""
    rows = [TrialRow(f"t{i}", float(i + 1), flops, val, 0.5, test)
            for i, (flops, val, test) in enumerate(points)]  # fmt: skip
    return Run(method, "digits", seed, float(len(points)), 100.0, repeat, trials=rows)


def test_curve_reach_and_ratio() -> None:
    ref = _run(REFERENCE, [(40, 0.90, 0.91), (40, 0.95, 0.93), (40, 0.94, 0.99)])
    # the pick follows validation: the third trial's better test score is not seen
    assert ref.curve() == [(40, 1, 0.91), (80, 2, 0.93), (120, 3, 0.93)]
    assert ref.final == 0.93 and ref.reach(0.93) == (80, 2)
    grow = _run("morphsearch", [(10, 0.91, 0.92), (20, 0.96, 0.94)])
    never = _run("scratch random", [(50, 0.99, 0.90)])
    cut = _run("scratch TPE", [(70, None, None), (10, 0.97, 0.95)])  # type: ignore[list-item]
    got = {o.run.method: o for o in outcomes([ref, grow, never, cut])}
    assert got["morphsearch"].target == 0.93
    assert got["morphsearch"].reached == (30, 2)
    assert got["morphsearch"].ratio == pytest.approx(30 / 80)
    assert got["morphsearch"].wall_ratio == pytest.approx(2 / 2)
    # over the reference's whole search (120 FLOPs), not its 80 to reach its best
    assert got["morphsearch"].whole_ratio == pytest.approx(30 / 120)
    assert math.isinf(got["scratch random"].whole_ratio)
    assert got["scratch random"].reached is None and math.isinf(got["scratch random"].ratio)
    # a trial without weights (cut, ASHA) is not a pick, but its FLOPs count
    assert got["scratch TPE"].reached == (80, 2) and got["scratch TPE"].ratio == 1.0
    assert got["scratch TPE"].whole_ratio == pytest.approx(80 / 120)
    assert got[REFERENCE].ratio == 1.0
    # ties on validation accuracy go to the lower validation loss
    tie = _run("x", [(1, 0.9, 0.8), (1, 0.9, 0.7)])
    tie.trials[1].val_loss = 0.1
    assert tie.final == 0.7
    assert Run.from_json(grow.to_json()) == grow


def test_validation_version_measures_without_test() -> None:
    ref = _run(REFERENCE, [(40, 0.90, 0.91), (40, 0.95, 0.93), (40, 0.94, 0.99)])
    assert ref.curve("val") == [(40, 1, 0.90), (80, 2, 0.95), (120, 3, 0.95)]
    assert ref.final_on("val") == 0.95 and ref.final == 0.93
    # reaches the reference's test figure early, its validation figure only later
    grow = _run("morphsearch", [(10, 0.91, 0.93), (20, 0.96, 0.94)])
    assert grow.reach(0.93) == (10, 1) and grow.reach(0.95, "val") == (30, 2)
    got = {o.run.method: o for o in outcomes([ref, grow], on="val")}
    assert got["morphsearch"].target == 0.95 and got["morphsearch"].final == 0.96
    assert got["morphsearch"].ratio == pytest.approx(30 / 80)
    # test never scored (a development run read on validation only): still measured
    blind = _run("scratch TPE", [(10, 0.97, None)])  # type: ignore[list-item]
    assert blind.curve() == [] and blind.curve("val") == [(10, 1, 0.97)]
    assert outcomes([ref, blind], on="val")[1].ratio == pytest.approx(10 / 80)
    assert "| morphsearch | 1 | 0.9600 |" in table([ref, grow], "digits", on="val")


def test_merge_keeps_the_later_run_of_each_row() -> None:
    first = [_run(REFERENCE, [(40, 0.9, 0.9)]), _run("morphsearch", [(10, 0.9, 0.8)]),
             _run("morphsearch", [(10, 0.9, 0.8)], seed=1)]  # fmt: skip
    rerun = _run("morphsearch", [(20, 0.95, 0.85)])
    merged = merge([*first, rerun])
    assert len(merged) == 3 and rerun in merged and first[1] not in merged
    assert {(r.method, r.seed) for r in merged} == {(REFERENCE, 0), ("morphsearch", 0),
                                                    ("morphsearch", 1)}  # fmt: skip


def test_bootstrap_median_is_fixed_and_handles_never() -> None:
    values = [0.2, 0.4, 0.3, 0.9, 0.25]
    mid, lo, hi = bootstrap_median(values)
    assert mid == 0.3 and lo <= mid <= hi
    assert (mid, lo, hi) == bootstrap_median(values)  # fixed rng
    assert lo >= 0.2 and hi <= 0.9
    # unreached seeds are infinite ratios: they sort last and can make the median never
    assert bootstrap_median([0.1, math.inf, 0.2])[0] == 0.2
    assert math.isinf(bootstrap_median([0.1, math.inf, math.inf])[0])
    assert bootstrap_median([0.1, 0.3])[0] == pytest.approx(0.2)
    assert bootstrap_median([1.0, math.inf])[0] == math.inf
    assert all(math.isnan(v) for v in bootstrap_median([math.nan]))


def test_tables_count_seeds_reached_within_half() -> None:
    runs = []
    for seed, cost in enumerate((10, 30, 60, 20, 5)):  # ratios 0.125 .. 0.75 of 80
        # the reference reaches its best at 80 and trains 40 more (its whole search: 120)
        runs.append(_run(REFERENCE, [(40, 0.90, 0.91), (40, 0.95, 0.93), (40, 0.94, 0.99)],
                         seed))  # fmt: skip
        runs.append(_run("morphsearch", [(cost, 0.96, 0.93)], seed))
    runs.append(_run(REFERENCE, [(40, 0.95, 0.92)], 0, repeat=1))
    runs.append(_run("morphsearch", [(90, 0.95, 0.90)], 0, repeat=1))
    text = table(runs, "digits")
    row = next(line for line in text.splitlines() if line.startswith("| morphsearch |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "5" and cells[8] == "5/5" and cells[9] == "4/5"
    assert cells[10].startswith("0.25 [")  # median of 0.125, 0.375, 0.75, 0.25, 0.0625
    assert cells[12] == "5/5"  # 60 of the whole search's 120 is within half
    assert "0 (repeat)" in seed_table(runs, "digits")
    row = "| 2 | 0.9300 | 0.9300, 0.75 (0.50) | 0.9300, 1.00 (0.67) |"  # x FLOPs (x whole search)
    assert row in seed_table(runs, "digits")
    assert "| digits, 0, morphsearch | 0.9300 / 0.9000 | 0.0300 | 0.12 / never |" in spread(runs)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_cpu_meter_counts_this_process() -> None:
    meter = CpuMeter(every=60)  # sampled on demand here
    before = meter.total()
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    assert 0.2 <= meter.total() - before <= 5
    meter.close()


def test_trial_ends_order_trials_within_tune_s_whole_second(tmp_path: Path) -> None:
    import json
    from types import SimpleNamespace

    import search_efficiency as bench

    clock = bench.TrialEnds()
    clock.on_trial_complete(0, [], SimpleNamespace(trial_id="b"))
    clock.on_trial_error(0, [], SimpleNamespace(trial_id="a"))
    assert set(clock.ends) == {"a", "b"} and clock.ends["b"] <= clock.ends["a"]
    # two trials cut by the budget in the same second of Tune's clock
    for trial_id, flops in (("a", 5.0), ("b", 7.0)):
        folder = tmp_path / f"trial_{trial_id}"
        folder.mkdir()
        result = {"trial_id": trial_id, "timestamp": 1000, "train_flops": flops}
        (folder / "result.json").write_text(json.dumps(result) + "\n")
    data = None  # no trial kept weights: the test split is never read
    rows = bench.collect(tmp_path, 990.0, data, {"a": 1000.75, "b": 1000.25}, 1003.5)  # type: ignore[arg-type]
    assert {r.trial_id: r.end for r in rows} == {"a": 10.75, "b": 10.25}
    assert [r.train_flops for r in rows] == [5.0, 7.0]
    # a trial without an end on the driver's clock (stopped by the budget) ends with the run
    rows = bench.collect(tmp_path, 990.0, data, {"a": 1000.75}, 1003.5)  # type: ignore[arg-type]
    assert {r.trial_id: r.end for r in rows} == {"a": 10.75, "b": 13.5}


def test_grow_config_runs_the_shipped_search_under_the_reference_s_asha(tmp_path: Path) -> None:
    import search_efficiency as bench

    task = bench.TASKS["digits"]
    config = bench.grow_config(task, 3, True, tmp_path, "digits-3-0-0")
    assert (config.scheduler.asha, config.scheduler.grace_period,
            config.scheduler.reduction_factor) == (True, bench.ASHA_GRACE, bench.ASHA_RF)  # fmt: skip
    assert config.seed == 3 and config.budget.max_train_flops == task.max_train_flops
    assert config.selection.inherit_weights and config.selection.pool == "best"
    assert config.objectives[0].metric == "val_loss"
    control = bench.grow_config(task, 3, False, tmp_path, "c", (("scheduler.asha", False),))
    assert not control.selection.inherit_weights and not control.scheduler.asha


def test_grow_overrides_reach_a_morphism_named_with_dots(tmp_path: Path) -> None:
    import search_efficiency as bench

    task = bench.TASKS["mnist1d"]
    grow = (("morphisms.widen.gradmax.k_fraction", [0.5, 2.0]), ("selection.lr", [0.001, 0.01]))
    config = bench.grow_config(task, 0, True, tmp_path, "m", grow)
    assert config.morphisms["widen.gradmax"].k_fraction == (0.5, 2.0)
    assert config.morphisms["widen.split"].k_fraction == (0.5, 1.0)  # the others as shipped
    assert set(config.morphisms) == set(task.base().morphisms)
    assert config.selection.lr == (0.001, 0.01) and config.selection.pool == "best"
    # MNIST-1D grows from the full-resolution seed; the strided one is an override away
    assert config.seed_graph.path == "graphs/mnist1d-cnn-fullres.json"
    strided = (("seed_graph.path", "graphs/mnist1d-cnn-tiny.json"),)
    config = bench.grow_config(task, 0, True, tmp_path, "m", strided)
    assert config.seed_graph.path == "graphs/mnist1d-cnn-tiny.json"
    # a whole morphism by its dotted name is replaced, not split into widen -> gradmax
    grow = (("morphisms.widen.gradmax", {"k_fraction": [0.25, 0.5]}),)
    config = bench.grow_config(task, 0, True, tmp_path, "m", grow)
    assert config.morphisms["widen.gradmax"].k_fraction == (0.25, 0.5)
    assert set(config.morphisms) == set(task.base().morphisms)
