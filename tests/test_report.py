"""The HTML report: self-contained, with real embedded plots and the best architecture,
and it renders in headless Chromium (skipped without Chromium, except under CI)."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from morphsearch.cli import main
from tests.test_export import make_lineage
from tests.test_viz import assert_real_plot

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
)  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("report")
    data = make_lineage(folder)
    out = folder / "report.html"
    assert main(["report", "--db", data["db"], "--search", "demo", "--out", str(out)]) == 0
    return {**data, "html": out.read_text(encoding="utf-8"), "path": out}


def _images(page: str) -> list[bytes]:
    return [
        base64.b64decode(data)
        for data in re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"',
                               page)
    ]  # fmt: skip


def test_report_is_self_contained_with_real_pictures(report: dict[str, Any]) -> None:
    page = report["html"]
    images = _images(page)
    assert len(images) == 3  # tree, Pareto front, drawing of the best architecture
    assert len(re.findall(r"<img\b", page)) == 3
    for png in images:
        assert_real_plot(png, min_size=(300, 200))
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)  # nothing fetched
    assert "<script" not in page and "<link" not in page and "url(" not in page


def test_report_names_the_best_architecture_and_its_path(report: dict[str, Any]) -> None:
    page = report["html"]
    assert "<h3>Best: <code>c</code></h3>" in page
    assert "<td>TERMINATED 4</td>" in page  # trials by status
    assert "0.9 (c)" in page  # best metric in the summary
    path_section = page.split("<h2>Lineage paths</h2>", 1)[1]
    first_path = path_section.split("<h3>", 2)[1]
    assert first_path.startswith("<code>c</code>: 2 steps from the seed")
    assert first_path.index("<td>seed</td>") < first_path.index("<td>a</td>")
    assert "widen.split@fc1 (k=4" in first_path and "deepen.skip@relu1" in first_path


def test_report_cli_errors(report: dict[str, Any], tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    for extra, named in (
        (["--search", "nope"], "nope"),
        (["--out", str(tmp_path / "missing" / "r.html")], "missing"),
    ):
        argv = ["report", "--db", report["db"], "--out", str(tmp_path / "r.html"), *extra]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("morphsearch: error:") and named in err


def _chromium() -> str | None:
    found = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                  if shutil.which(n)), None)  # fmt: skip
    if found is None:
        reason = "headless Chromium not found: apt-get install -y chromium"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)
    return found


def test_report_renders_in_headless_chromium(report: dict[str, Any], tmp_path: Path) -> None:
    browser = _chromium()
    shot = tmp_path / "shot.png"
    command = [str(browser), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
               f"--screenshot={shot}", "--window-size=1280,2000",
               report["path"].resolve().as_uri()]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    image = assert_real_plot(shot, min_size=(1280, 2000))
    rgb = image[..., :3].reshape(-1, 3)
    # the Pareto front's red markers and the tree's yellow (best) marker are on screen
    assert ((rgb[:, 0] > 0.75) & (rgb[:, 1] < 0.3) & (rgb[:, 2] < 0.3)).sum() > 50
    assert ((rgb[:, 0] > 0.8) & (rgb[:, 1] > 0.8) & (rgb[:, 2] < 0.3)).sum() > 20
