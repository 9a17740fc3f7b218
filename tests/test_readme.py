"""The README agrees with the code: its config example is the quickstart config, and the
commands it lists exist with the options it shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from morphsearch.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_config_example_is_the_quickstart_config() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README, flags=re.S)
    quickstart = (ROOT / "configs" / "quickstart.yaml").read_text(encoding="utf-8")
    assert quickstart in blocks


@pytest.mark.parametrize(
    "argv",
    [
        ["graph", "show", "F", "--all", "--json"],
        ["graph", "grow", "F", "widen.random", "--data", "npz:x.npz", "--out", "c.json"],
        ["search", "C", "--resume", "--verbose", "--name", "N"],
    ],
)
def test_options_the_readme_names_parse(argv: list[str]) -> None:
    build_parser().parse_args(argv)
    for option in (a for a in argv if a.startswith("--")):
        assert option in README


def test_readme_names_what_the_tests_need() -> None:
    assert "apt-get install chromium" in README and "apt-get install postgresql" in README


def test_the_python_api_example_runs_from_morphsearch_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    [example] = [b for b in blocks if b.startswith("import morphsearch as ms")]
    monkeypatch.chdir(ROOT)
    scope: dict[str, object] = {}
    exec(compile(example, "README.md", "exec"), scope)
    arch, child = scope["arch"], scope["child"]
    assert child.shape("conv1")[0] == 8 and arch.shape("conv1")[0] == 4  # type: ignore[attr-defined]
    assert scope["config"].name == "quickstart"  # type: ignore[attr-defined]
