"""Curves, compute ratios, bootstrap intervals, tables and the plot of
``bench/search_efficiency.py`` (no Ray here: the test exercises all of it)."""

from __future__ import annotations

import math
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

# what a curve follows: the best-by-validation trial's test accuracy (reported), or its
# validation accuracy (for choosing settings on development seeds without reading test)
On = Literal["test", "val"]

REFERENCE = "scratch TPE + ASHA"  # the from-scratch search every method is measured against
METHODS = (
    "morphsearch",
    "morphsearch, no inheritance",
    "scratch TPE",
    REFERENCE,
    "scratch random",
)
COLORS = dict(zip(METHODS, ("C0", "C1", "C2", "C3", "C7"), strict=True))


@dataclass
class TrialRow:
    trial_id: str
    end: float  # seconds since the run started
    train_flops: float  # everything the trial trained, early-stopped or cut
    val_accuracy: float | None = None  # None: no kept weights (cut by the budget, ASHA)
    val_loss: float | None = None
    test_accuracy: float | None = None
    params: int | None = None
    arch: str = ""

    def key(self) -> tuple[float, float]:
        """The pick: validation accuracy, ties (frequent on a few hundred samples)
        broken by the lower validation loss."""
        loss = self.val_loss if self.val_loss is not None and math.isfinite(self.val_loss) else 0
        return (self.val_accuracy if self.val_accuracy is not None else -1.0, -loss)


@dataclass
class Run:
    method: str
    dataset: str
    seed: int
    wall_s: float
    budget_flops: float = 0.0
    repeat: int = 0  # 1: the second run of the same seed (--repeat)
    cpu_s: float = math.nan  # CPU seconds of the bench and its Ray processes (CpuMeter)
    trials: list[TrialRow] = field(default_factory=list)

    def curve(self, on: On = "test") -> list[tuple[float, float, float]]:
        """(cumulative training FLOPs, wall s, test accuracy of the best-by-validation
        trial so far; its validation accuracy with ``on="val"``) at each trial's end, in
        the order trials ended."""
        out: list[tuple[float, float, float]] = []
        spent, best, shown = 0.0, None, math.nan
        for row in sorted(self.trials, key=lambda r: r.end):
            spent += row.train_flops
            value = row.val_accuracy if on == "val" else row.test_accuracy
            if row.val_accuracy is not None and value is not None and (
                    best is None or row.key() > best.key()):  # fmt: skip
                best, shown = row, value
            if best is not None:
                out.append((spent, row.end, shown))
        return out

    def reach(self, target: float, on: On = "test") -> tuple[float, float] | None:
        """(FLOPs, wall s) when the curve first reaches ``target``; None if never."""
        for flops, wall, acc in self.curve(on):
            if acc >= target - 1e-9:
                return flops, wall
        return None

    def final_on(self, on: On) -> float:
        curve = self.curve(on)
        return curve[-1][2] if curve else math.nan

    @property
    def total_flops(self) -> float:
        return sum(r.train_flops for r in self.trials)

    @property
    def final(self) -> float:
        """The test accuracy of the run's pick."""
        return self.final_on("test")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Run:
        rows = [TrialRow(**r) for r in raw.get("trials", [])]
        return cls(**{**raw, "trials": rows})


@dataclass
class Outcome:
    """One run against its seed's reference run (``REFERENCE``, same seed and repeat)."""

    run: Run
    target: float  # the reference's final test (or validation) accuracy
    reached: tuple[float, float] | None  # this run's (FLOPs, wall s) to reach it
    ref_reached: tuple[float, float] | None  # the reference's own
    on: On = "test"
    ref_total: float = math.nan  # the reference's whole search: every trial's FLOPs

    @property
    def final(self) -> float:
        """The run's own final accuracy, on the same split as the target."""
        return self.run.final_on(self.on)

    @property
    def ratio(self) -> float:
        """FLOPs to reach the target over the reference's; inf when never reached."""
        if self.reached is None:
            return math.inf
        if self.ref_reached is None or self.ref_reached[0] <= 0:
            return math.nan
        return self.reached[0] / self.ref_reached[0]

    @property
    def whole_ratio(self) -> float:
        """FLOPs to reach the target over everything the reference's search trained (what
        a user running it pays, not knowing which trial will be its best); inf when never
        reached. A second reading of "x the reference's compute", reported beside
        :attr:`ratio`, which stays the headline."""
        if self.reached is None:
            return math.inf
        if not self.ref_total > 0:
            return math.nan
        return self.reached[0] / self.ref_total

    @property
    def wall_ratio(self) -> float:
        if self.reached is None:
            return math.inf
        if self.ref_reached is None or self.ref_reached[1] <= 0:
            return math.nan
        return self.reached[1] / self.ref_reached[1]


class CpuMeter:
    """CPU seconds of this process and its descendants (Ray's raylet and workers),
    sampled from ``/proc`` by a thread: what a run computed, whatever else loads the
    machine (Linux only; elsewhere ``total()`` stays NaN)."""

    def __init__(self, every: float = 0.5) -> None:
        self.every, self.seen = every, {}  # type: ignore[var-annotated]
        self.ok = Path("/proc/self/stat").exists()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        if self.ok:
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def sample(self) -> None:
        stats: dict[int, tuple[int, str, float]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                text = Path(entry.path, "stat").read_text()
            except OSError:  # gone since the listing
                continue
            rest = text[text.rindex(")") + 2 :].split()
            stats[int(entry.name)] = (int(rest[1]), rest[19], float(rest[11]) + float(rest[12]))
        mine, frontier = set(), {os.getpid()}
        while frontier:
            mine |= frontier
            frontier = {p for p, (ppid, _, _) in stats.items() if ppid in frontier} - mine
        for pid in mine & stats.keys():
            _, start, ticks = stats[pid]
            self.seen[(pid, start)] = ticks

    def total(self) -> float:
        if not self.ok:
            return math.nan
        self.sample()
        return sum(self.seen.values()) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self._stop.set()


def outcomes(runs: list[Run], reference: str = REFERENCE, on: On = "test") -> list[Outcome]:
    """Every run measured against the reference run of its dataset, seed and repeat:
    on test accuracy (reported), or on validation accuracy alone (``on="val"``)."""
    refs = {(r.dataset, r.seed, r.repeat): r for r in runs if r.method == reference}
    out = []
    for run in runs:
        ref = refs.get((run.dataset, run.seed, run.repeat))
        if ref is None:
            continue
        target = ref.final_on(on)
        if not math.isnan(target):
            out.append(Outcome(run, target, run.reach(target, on), ref.reach(target, on), on,
                               ref.total_flops))  # fmt: skip
    return out


def merge(runs: list[Run]) -> list[Run]:
    """One run per method, dataset, seed and repeat: a later run replaces an earlier one
    (``--report A.json B.json``: B's reruns of some rows over A's)."""
    return list({(r.method, r.dataset, r.seed, r.repeat): r for r in runs}.values())


def bootstrap_median(values: list[float], resamples: int = 10_000,
                     seed: int = 0) -> tuple[float, float, float]:  # fmt: skip
    """(median, 2.5 %, 97.5 %) of the median over ``resamples`` resamples with
    replacement (numpy, fixed rng). ``inf`` (never reached) is a value like any other:
    it sorts last, so a median of mostly unreached seeds is ``inf``."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    samples = np.sort(x[rng.integers(0, x.size, size=(resamples, x.size))], axis=1)
    n = x.size
    # the median by order statistics (no inf - inf arithmetic for an even count)
    lo_mid, hi_mid = samples[:, (n - 1) // 2], samples[:, n // 2]
    with np.errstate(invalid="ignore"):
        medians = np.where(lo_mid == hi_mid, lo_mid, (lo_mid + hi_mid) / 2)
    srt = np.sort(x)
    mid = srt[(n - 1) // 2] if srt[(n - 1) // 2] == srt[n // 2] else (
        (srt[(n - 1) // 2] + srt[n // 2]) / 2)  # fmt: skip
    lo, hi = np.quantile(medians, [0.025, 0.975], method="inverted_cdf")
    return float(mid), float(lo), float(hi)


def _x(value: float, digits: int = 2) -> str:
    if math.isnan(value):
        return "-"
    return "never" if math.isinf(value) else f"{value:.{digits}f}"


def _ci(values: list[float], digits: int = 2, scale: float = 1.0) -> str:
    mid, lo, hi = bootstrap_median(values)
    if math.isnan(mid):
        return "-"
    return f"{_x(mid * scale, digits)} [{_x(lo * scale, digits)}, {_x(hi * scale, digits)}]"


def table(runs: list[Run], dataset: str, repeat: int = 0, on: On = "test") -> str:
    """Per method over seeds: final test (validation) accuracy, how often and at what
    compute it reaches the reference's best, medians with bootstrap 95 % intervals; last,
    how often it gets there within half of all the reference's search trained."""
    mine = [o for o in outcomes(runs, on=on)
            if o.run.dataset == dataset and o.run.repeat == repeat]  # fmt: skip
    lines = [
        f"| {dataset} method | seeds | final {on} acc, mean | median [95 % CI] | trials | "
        f"GFLOPs spent | wall s | CPU s | reached ASHA's best | at <= 0.5x | x ASHA's FLOPs, "
        f"median [95 % CI] | x ASHA's wall, median | at <= 0.5x ASHA's whole search |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method in METHODS:
        os_ = [o for o in mine if o.run.method == method]
        if not os_:
            continue
        finals = [o.final for o in os_]
        ratios = [o.ratio for o in os_]
        lines.append(
            f"| {method} | {len(os_)} | {np.nanmean(finals):.4f} | {_ci(finals, 4)} | "
            f"{np.mean([len(o.run.trials) for o in os_]):.0f} | "
            f"{np.mean([o.run.total_flops for o in os_]) / 1e9:.0f} | "
            f"{np.mean([o.run.wall_s for o in os_]):.0f} | "
            f"{np.mean([o.run.cpu_s for o in os_]):.0f} | "
            f"{sum(o.reached is not None for o in os_)}/{len(os_)} | "
            f"{sum(r <= 0.5 for r in ratios)}/{len(os_)} | {_ci(ratios)} | "
            f"{_x(bootstrap_median([o.wall_ratio for o in os_])[0])} | "
            f"{sum(o.whole_ratio <= 0.5 for o in os_)}/{len(os_)} |"
        )
    return "\n".join(lines)


def seed_table(runs: list[Run], dataset: str, on: On = "test") -> str:
    """Per seed: final test (validation) accuracy and FLOPs ratio to the reference of
    each method (in brackets: over the reference's whole search)."""
    mine = [o for o in outcomes(runs, on=on) if o.run.dataset == dataset]
    keys = sorted({(o.run.seed, o.run.repeat) for o in mine})
    methods = [m for m in METHODS if any(o.run.method == m for o in mine)]
    lines = [f"| {dataset} seed | ASHA's best ({on}) | "
             + " | ".join(f"{m}: {on}, x FLOPs (x whole search)" for m in methods) + " |",
             "|---|---:|" + "---:|" * len(methods)]  # fmt: skip
    for seed, rep in keys:
        got = {o.run.method: o for o in mine if (o.run.seed, o.run.repeat) == (seed, rep)}
        target = next(iter(got.values())).target
        cells = [f"{got[m].final:.4f}, {_x(got[m].ratio)} ({_x(got[m].whole_ratio)})"
                 if m in got else "-"
                 for m in methods]  # fmt: skip
        label = f"{seed}" + (" (repeat)" if rep else "")
        lines.append(f"| {label} | {target:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spread(runs: list[Run]) -> str:
    """Two runs of the same seed (``--repeat``): the difference per method."""
    mine = {(o.run.dataset, o.run.method, o.run.seed, o.run.repeat): o for o in outcomes(runs)}
    lines = ["| repeat: dataset, seed, method | final test, run 1 / run 2 | difference | "
             "x ASHA's FLOPs, run 1 / run 2 |", "|---|---:|---:|---:|"]  # fmt: skip
    for (dataset, method, seed, rep), first in sorted(mine.items()):
        second = mine.get((dataset, method, seed, 1))
        if rep or second is None:
            continue
        a, b = first.run.final, second.run.final
        lines.append(f"| {dataset}, {seed}, {method} | {a:.4f} / {b:.4f} | {abs(a - b):.4f} | "
                     f"{_x(first.ratio)} / {_x(second.ratio)} |")  # fmt: skip
    return "\n".join(lines) if len(lines) > 2 else ""


def plot(runs: list[Run], out: Path) -> None:
    """Test accuracy of the best-by-validation trial against cumulative training FLOPs
    (top) and wall time (bottom), every seed a line, one column per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r.dataset for r in runs})
    fig, axes = plt.subplots(2, len(datasets), figsize=(6 * len(datasets), 8), squeeze=False)
    for col, dataset in enumerate(datasets):
        mine = [r for r in runs if r.dataset == dataset]
        for method in METHODS:
            for i, run in enumerate(r for r in mine if r.method == method):
                curve = run.curve()
                if not curve:
                    continue
                flops, wall, acc = zip(*curve, strict=True)
                kw = {"color": COLORS[method], "alpha": 0.7, "where": "post",
                      "label": method if i == 0 else None}  # fmt: skip
                axes[0][col].step([f / 1e9 for f in flops], acc, **kw)
                axes[1][col].step(wall, acc, **kw)
        finals = [r.final for r in mine if not math.isnan(r.final)]
        for row, label in ((0, "cumulative training GFLOPs (log)"), (1, "wall time (s)")):
            ax = axes[row][col]
            ax.set_xlabel(label)
            ax.set_ylabel("test accuracy of the best-by-validation trial")
            ax.set_title(dataset)
            ax.grid(alpha=0.3)
            if finals:
                ax.set_ylim(min(finals) - 0.06, max(finals) + 0.01)
        axes[0][col].set_xscale("log")
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
