"""What a search prints: morphsearch's own lines, and Ray/Tune/Optuna's only with --verbose.

Each library has its own switch: Ray and Tune log through Python loggers under ``ray``
(the token-authentication notice, the "Experiment state snapshotting" warnings), Tune's
new output engine prints a configuration box and a TensorBoard hint whatever its
verbosity, and Optuna logs every trial. Environment variables must be set before Ray
starts, so that its worker processes inherit them.
"""

from __future__ import annotations

import logging
import os

__all__ = ["QUIET_ENV", "quiet_libraries"]

QUIET_ENV = {
    # Tune's legacy reporter at verbose=0 prints nothing; the new engine prints a box
    "RAY_AIR_NEW_OUTPUT": "0",
    # no automatic logger callbacks (the TensorBoard one prints a hint); the runner adds
    # the JSON and CSV ones itself, so result.json and progress.csv are still written
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # runs checkpoint at their end, so snapshots are often forced: that is intended
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}


def quiet_libraries(verbose: bool) -> int:
    """Silence Ray, Tune and Optuna unless ``verbose``; returns Ray's logging level.

    Variables the user set in the environment win over these defaults.
    """
    if verbose:
        return logging.INFO
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    for name in ("ray", "ray.tune", "ray.train", "ray.data", "filelock"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return logging.ERROR
