"""A search prints morphsearch's own lines only; --verbose adds Ray's, Tune's, Optuna's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.search.conftest import TINY

# progress lines "[00:03] trial ... | 1/2 done ...", then the two summary lines
OWN_LINE = re.compile(r"^(\[\d\d:\d\d(:\d\d)?\] |search \S+: \d+ trials|lineage: )")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_small_search_prints_only_its_own_lines(tmp_path: Path) -> None:
    config = {
        **TINY,
        "name": "quiet",
        "database": f"sqlite:///{tmp_path}/lineage.db",
        "storage": str(tmp_path / "runs"),
        "budget": {**TINY["budget"], "trials": 3, "epochs_per_trial": 1},
    }
    path = tmp_path / "quiet.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_"))}
    done = subprocess.run(
        [sys.executable, "-m", "morphsearch", "search", str(path)],
        capture_output=True, text=True, timeout=580, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    foreign = [line for line in lines if not OWN_LINE.match(line)]
    assert foreign == [], foreign[:10]
    assert any(line.startswith("search quiet: 3 trials") for line in lines), lines
