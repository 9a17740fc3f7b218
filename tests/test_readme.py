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
