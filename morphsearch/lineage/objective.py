"""What "best" means for a search, and the store-to-values glue built on it.

:func:`objective` is the one resolver of the metric and mode to rank a search by
(the CLI, the report, the export and the pictures all call it). The functions that
take a store turn it into plain values (best-first records, an architecture id) for
code that draws or writes and never reads the store itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from morphsearch.errors import ConfigError, NotFound

if TYPE_CHECKING:
    from morphsearch.lineage.records import BestResult
    from morphsearch.lineage.store import LineageStore

__all__ = [
    "best_arch_id",
    "config_metric",
    "metric_values",
    "objective",
    "search_objective",
    "test_scores",
]


def config_metric(config: Mapping[str, Any] | None) -> str | None:
    """The metric the config ranks by: its top-level ``metric``, else the first entry of
    ``objectives``; None when it names none."""
    config = config or {}
    return config.get("metric") or _first_objective(config).get("metric") or None


def _first_objective(config: Mapping[str, Any]) -> Mapping[str, Any]:
    objectives = config.get("objectives") or [{}]
    return objectives[0] if isinstance(objectives[0], Mapping) else {}


def objective(
    config: Mapping[str, Any] | None,
    metric: str | None = None,
    mode: str | None = None,
    *,
    search: str | None = None,
) -> tuple[str, str]:
    """The metric and mode to rank a search by.

    Explicit arguments win; otherwise the config's first entry of ``objectives``
    (``[{metric, mode}, ...]``, as :class:`~morphsearch.search.config.SearchConfig`
    stores it) or its top-level ``metric``/``mode``. A mode defaults to ``max``.

    Args:
        search: the search's name, for the error message.

    Returns:
        ``(metric, mode)``.

    Raises:
        ConfigError: neither the arguments nor the config name a metric, or a mode
            other than ``max``/``min``.
    """
    config = config or {}
    chosen = metric or config_metric(config)
    if not chosen:
        which = f"search {search!r} names no metric in its config" if search else (
            "the search config names no metric")
        raise ConfigError(f"{which}: pass --metric NAME")
    if mode is None:
        first = _first_objective(config)
        same = first.get("metric") == chosen
        mode = config.get("mode") or (first.get("mode") if same else None) or "max"
    if mode not in ("max", "min"):
        raise ConfigError(f"mode {mode!r} is not valid: use --mode max or --mode min")
    return str(chosen), str(mode)


def search_objective(
    store: LineageStore, search: str, metric: str | None = None, mode: str | None = None
) -> tuple[str, str]:
    """:func:`objective` for the stored config of ``search``.

    Raises:
        NotFound: no such search. ConfigError: as :func:`objective`.
    """
    return objective(store.search(search).config, metric, mode, search=search)


def metric_values(
    store: LineageStore, search: str, metric: str, mode: str, evaluation: int | None = None
) -> list[BestResult]:
    """Every scored architecture of ``search`` at its best ``metric`` value (over every
    evaluation, or at ``evaluation`` only), best first.

    Raises:
        NotFound: no such search.
    """
    return store.best(search, metric, mode, evaluation, k=None)  # type: ignore[arg-type]


TEST_METRICS = ("test_accuracy", "test_loss")


def test_scores(store: LineageStore, trial_id: str | None, arch_id: str) -> dict[str, Any]:
    """The test-split scores recorded for ``arch_id`` by its trial, by metric name (its
    ``MetricRecord``s; empty when it was not scored). One read of that trial's metrics.

    Raises:
        NotFound: no such trial.
    """
    if trial_id is None:
        return {}
    return {m.name: m for m in store.metrics(trial_id)
            if m.arch_id == arch_id and m.name in TEST_METRICS}  # fmt: skip


def best_arch_id(
    store: LineageStore, search: str | None, metric: str | None = None, mode: str | None = None
) -> str:
    """The best architecture of ``search`` (default: the only one) by ``metric``
    (default: the config's objective).

    Raises:
        NotFound: no such search, or no value of the metric recorded yet.
        ConfigError: no metric given or configured.
    """
    name = store.resolve_search(search)
    metric, mode = search_objective(store, name, metric, mode)
    found = store.best(name, metric, mode, k=1)  # type: ignore[arg-type]
    if not found:
        raise NotFound(
            f"search {name!r} has no {metric} values recorded yet; wait for a trial to "
            "report, or pass --metric / --arch ID"
        )
    return found[0].arch_id
