"""Prefect lives on the Prefect floor: the core imports without it (docs/architecture.md).

Floors 6-8 (``blocks/``, ``prefect_bridge.py``, ``tasks.py``, ``flows/``, ``cli/``,
``demo/``) may use Prefect; everything below reports through logging and callbacks, and
the four places where a callback becomes a Prefect call (breaker events, alert events,
plot artifacts, Secret-block keys) go through :mod:`prefect_memory.prefect_bridge`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import prefect_memory

ROOT = Path(prefect_memory.__file__).resolve().parent
#: Modules and packages on the Prefect floor or above (relative to the package root).
PREFECT_FLOOR = ("blocks", "flows", "demo", "cli", "tasks.py", "prefect_bridge.py")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("prefect_memory", *parts))


def _below_the_prefect_floor() -> list[Path]:
    return sorted(
        p for p in ROOT.rglob("*.py") if p.relative_to(ROOT).parts[0] not in PREFECT_FLOOR
    )


def _imports_prefect(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (  # importlib.import_module("prefect...") / __import__("prefect...")
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        else:
            continue
        if any(n == "prefect" or n.startswith("prefect.") for n in names):
            lines.append(node.lineno)
    return lines


def test_no_module_below_the_prefect_floor_imports_prefect_even_deferred() -> None:
    found = {
        str(p.relative_to(ROOT)): lines
        for p in _below_the_prefect_floor()
        if (lines := _imports_prefect(ast.parse(p.read_text(encoding="utf-8"))))
    }
    assert found == {}, f"Prefect imported below the Prefect floor (file: lines): {found}"


def test_the_bridge_is_where_prefect_is_called() -> None:
    tree = ast.parse((ROOT / "prefect_bridge.py").read_text(encoding="utf-8"))
    assert len(_imports_prefect(tree)) == 4  # events (x2), artifacts, Secret blocks


def test_importing_the_core_does_not_import_prefect() -> None:
    names = ["prefect_memory", "prefect_memory.prefect_bridge"]
    names += [_module_name(p) for p in _below_the_prefect_floor()]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "    loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'prefect')\n"
        "    if loaded:\n"
        "        print(name, loaded[:5])\n"
        "        break\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"this import pulled Prefect in: {out.stdout.strip()}"
    assert {"prefect_memory.tiers", "prefect_memory.analytics"} <= set(names)
    assert "prefect_memory.plugins.parquet.backend" in names
