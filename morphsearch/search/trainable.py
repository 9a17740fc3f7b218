"""The Ray Tune function trainable: Ray's side of one trial (:mod:`.trial` does the work).

``train_child`` reads the trial's :class:`~morphsearch.search.protocol.TrialPlan` from its
config and runs :func:`~morphsearch.search.trial.run_trial` with a session that reports
to Tune. A trial that runs out of GPU memory fails with one line (the search goes on:
Tune records the error and the lineage callback stores the line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from ray import tune

from morphsearch.errors import SearchError
from morphsearch.search.protocol import TrialPlan
from morphsearch.search.trial import TrialSetup, child_arch_id, run_trial

__all__ = ["TrialSetup", "TuneSession", "child_arch_id", "train_child"]


class TuneSession:
    """A :class:`~morphsearch.search.trial.Session` on Ray Tune's function API."""

    def __init__(self) -> None:
        self.trial_id = tune.get_context().get_trial_id() or "local"
        self._checkpoint = tune.get_checkpoint()

    def checkpoint_dir(self) -> Path | None:
        if self._checkpoint is None:
            return None
        # function checkpoints on local or shared storage: read in place, or downloaded
        return Path(self._checkpoint.to_directory())

    def report(self, result: dict[str, Any], folder: Path | None) -> None:
        checkpoint = None if folder is None else tune.Checkpoint.from_directory(str(folder))
        tune.report(result, checkpoint=checkpoint)

    def node_id(self) -> str | None:
        import ray

        try:
            return str(ray.get_runtime_context().get_node_id())
        except Exception:  # outside Ray (unit tests call the function directly)
            return None


def train_child(config: dict[str, Any], setup: TrialSetup) -> None:
    """The function trainable (``tune.with_parameters(train_child, setup=...)``).

    Raises:
        SearchError: the trial ran out of GPU memory (one line naming the fix), or its
            child is not the one planned.
    """
    plan = TrialPlan.from_config(config)
    try:
        run_trial(plan, setup, TuneSession())
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        raise SearchError(
            f"trial ran out of GPU memory (batch_size {setup.batch_size}, "
            f"{setup.gpus:g} GPU per trial); lower budget.batch_size or raise resources.gpus"
        ) from None
