"""The CLI writing into a pipe whose reader left (``morphsearch ... | head``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from morphsearch import builders


def test_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps(builders.mlp([4, 8, 8, 2]).to_json()))
    process = subprocess.Popen(
        [sys.executable, "-m", "morphsearch", "graph", "morphisms", str(graph), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the first line is written
    err = process.stderr.read().decode()
    code = process.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert err == "" and code == 141
