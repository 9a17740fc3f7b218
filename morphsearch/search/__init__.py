"""The search: Ray Tune + Optuna over morphisms, lineage on the driver.

This is the only package that imports ray. Import the heavy parts lazily:
``from morphsearch.search.runner import run_search``.
"""

from morphsearch.search.config import SearchConfig, load_config

__all__ = ["SearchConfig", "load_config", "run_search"]


def __getattr__(name: str) -> object:
    # run_search pulls in ray and torch; load it only when asked for
    if name == "run_search":
        from morphsearch.search.runner import run_search  # deferred: ray, torch

        return run_search
    raise AttributeError(name)
