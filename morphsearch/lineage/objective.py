"""What "best" means for a search: the metric and mode in its stored config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from morphsearch.errors import ConfigError

__all__ = ["objective"]


def objective(
    config: Mapping[str, Any] | None, metric: str | None = None, mode: str | None = None
) -> tuple[str, str] | None:
    """The metric and mode to rank a search by.

    Explicit arguments win; otherwise the config's first entry of ``objectives``
    (``[{metric, mode}, ...]``, as :class:`~morphsearch.search.config.SearchConfig`
    stores it) or its top-level ``metric``/``mode``. A mode defaults to ``max``.

    Returns:
        ``(metric, mode)``, or None when neither the arguments nor the config name a metric.

    Raises:
        ConfigError: a mode other than ``max``/``min``.
    """
    config = config or {}
    objectives = config.get("objectives") or [{}]
    first = objectives[0] if isinstance(objectives[0], Mapping) else {}
    chosen = metric or config.get("metric") or first.get("metric")
    if not chosen:
        return None
    if mode is None:
        same = first.get("metric") == chosen
        mode = config.get("mode") or (first.get("mode") if same else None) or "max"
    if mode not in ("max", "min"):
        raise ConfigError(f"mode {mode!r} is not valid: use --mode max or --mode min")
    return str(chosen), str(mode)
