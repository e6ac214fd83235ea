"""The API reference (docs/reference/*.md, rendered by mkdocstrings) names every public name.

``mkdocs build --strict`` (tests/test_docs.py) checks that every ``:::`` directive resolves;
this checks the other direction: a name added to a package's ``__all__`` gets a place in the
reference. Packages documented whole (a ``:::`` directive without ``members``) cover their
``__all__``; a directive ``::: pkg.module.Name`` covers ``Name``.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference"
DIRECTIVE = re.compile(r"^::: (?P<path>[\w.]+)\n(?P<options>(?:    .*\n)*)", re.M)

PACKAGES = [
    "prefect_memory",
    "prefect_memory.errors",
    "prefect_memory.tiers",
    "prefect_memory.hybrid",
    "prefect_memory.resilience",
    "prefect_memory.config",
    "prefect_memory.shared",
    "prefect_memory.tabular",
    "prefect_memory.validation",
    "prefect_memory.analytics",
    "prefect_memory.blocks",
    "prefect_memory.tasks",
    "prefect_memory.flows",
]
#: Public names left out of the reference on purpose, with the reason.
LEFT_OUT = {
    "prefect_memory.hybrid.Lanes": "the per-store write queues inside HybridBackend",
    "prefect_memory.__version__": "a version string",
}


def covered() -> set[str]:
    """Every name the reference pages document (as ``Name``)."""
    names: set[str] = set()
    for page in REFERENCE.glob("*.md"):
        for match in DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
            path, options = match["path"], match["options"]
            listed = re.search(r"members:\s*\[(?P<inline>[^\]]*)\]", options)
            block = re.findall(r"^\s+- (\w+)\s*$", options, re.M)
            if listed:
                names |= {n.strip() for n in listed["inline"].split(",") if n.strip()}
            elif block:
                names |= set(block)
            elif "members: false" in options:
                continue
            else:
                names.add(path.rsplit(".", 1)[-1])
                module = importlib.import_module(path) if _is_module(path) else None
                names |= set(getattr(module, "__all__", ()))
    return names


def _is_module(path: str) -> bool:
    try:
        importlib.import_module(path)
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("package", PACKAGES)
def test_the_reference_names_every_public_name(package: str) -> None:
    documented = covered()
    public = getattr(importlib.import_module(package), "__all__", ())
    missing = sorted(
        name for name in public if name not in documented and f"{package}.{name}" not in LEFT_OUT
    )
    assert not missing, f"{package}: public names missing from docs/reference: {missing}"
