"""The user's whole path is reachable from ``morphsearch`` alone, lazily."""

from __future__ import annotations

import subprocess
import sys

import morphsearch
from morphsearch import errors


def test_every_public_name_resolves_and_every_error_class_is_there() -> None:
    for name in morphsearch.__all__:
        assert getattr(morphsearch, name) is not None, name
    for name in errors.__all__:
        assert getattr(morphsearch, name) is getattr(errors, name)
    for name in ("run_search", "SearchConfig", "load_config", "load_dataset", "LineageStore",
                 "export_architecture", "from_module", "load_module", "load_architecture", "morphisms",
                 "builders", "growth"):
        assert name in morphsearch.__all__


def test_one_name_per_loader() -> None:
    """``load_module`` gives an ``nn.Module``, ``arch.load`` an ``Architecture``; the
    ambiguous top-level ``load`` of 0.1 is gone."""
    assert morphsearch.load_module.__name__ == "load_module"
    assert not hasattr(morphsearch, "load") and "load" not in morphsearch.__all__


def test_importing_the_package_imports_neither_torch_nor_ray() -> None:
    code = "import sys, morphsearch; print('torch' in sys.modules, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_all_is_exactly_the_lazy_table() -> None:
    assert sorted(morphsearch.__all__) == sorted([*morphsearch._LAZY, "__version__"])
