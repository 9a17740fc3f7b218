"""The registry helper that datasets, builders and triggers share."""

import pytest

from morphsearch.errors import ConfigError
from morphsearch.registry import Registry


def test_unknown_name_lists_the_valid_ones():
    reg: Registry[int] = Registry("dataset")
    reg.add("digits", 1)
    reg.add("mnist1d", 2)
    with pytest.raises(ConfigError, match=r"unknown dataset 'cifar'; valid datasets: digits, mnist1d"):
        reg.get("cifar")


def test_decorator_registers_and_duplicates_are_refused():
    reg: Registry[object] = Registry("trigger")

    @reg.register("plateau")
    def plateau() -> str:
        return "p"

    assert reg.get("plateau") is plateau
    assert "plateau" in reg and list(reg) == ["plateau"] and len(reg) == 1
    with pytest.raises(ValueError, match="already registered"):
        reg.add("plateau", plateau)
