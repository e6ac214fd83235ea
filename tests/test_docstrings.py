"""Every docstring example in the package runs (and so cannot go stale)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import prefect_memory

SKIP_PREFIXES = ("prefect_memory.demo",)


def _modules() -> list[str]:
    names = ["prefect_memory"]
    for info in pkgutil.walk_packages(prefect_memory.__path__, "prefect_memory."):
        if not info.name.startswith(SKIP_PREFIXES):
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
