"""``memory.py`` (floor 3) imports nothing from the floors above it (tabular/, resilience/).

The features of those packages reach a memory from their side: ``mem.frames`` is an
accessor registered by :mod:`prefect_memory.tabular`, and health is
``prefect_memory.health(mem)``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import prefect_memory.memory

ABOVE = ("tabular", "resilience")
SOURCE = Path(prefect_memory.memory.__file__)


def _imported_modules(tree: ast.AST) -> list[str]:
    """Every module an import statement names, anywhere (deferred imports count too)."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names.append(base)
            sep = "" if base.endswith(".") else "."
            names.extend(f"{base}{sep}{alias.name}" for alias in node.names)
    names.extend(
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    )
    return names


def _is_above(module: str) -> bool:
    parts = module.lstrip(".").split(".")
    if module.startswith("prefect_memory."):
        parts = parts[1:]
    elif not module.startswith("."):
        return False
    return bool(parts) and parts[0] in ABOVE


def test_memory_source_imports_nothing_above_its_floor() -> None:
    tree = ast.parse(SOURCE.read_text(encoding="utf-8"))
    offending = [name for name in _imported_modules(tree) if _is_above(name)]
    assert offending == [], f"memory.py imports from a floor above it: {offending}"


def test_the_check_sees_deferred_and_absolute_imports() -> None:
    tree = ast.parse(
        textwrap.dedent(
            """
            def f():
                from .tabular.methods import FrameMethods
                from . import resilience
                import prefect_memory.resilience.health
            """
        )
    )
    assert [name for name in _imported_modules(tree) if _is_above(name)] == [
        ".tabular.methods",
        ".tabular.methods.FrameMethods",
        ".resilience",
        "prefect_memory.resilience.health",
    ]


def test_memory_module_alone_loads_nothing_above_its_floor() -> None:
    """Executing memory.py itself (its package's ``__init__`` aside) loads neither package.

    ``import prefect_memory.memory`` runs ``prefect_memory/__init__`` first, which imports
    the public API (resilience included), so the check stubs the package and runs the
    module file under its real name.
    """
    code = textwrap.dedent(
        f"""
        import importlib.util, sys, types
        package = types.ModuleType("prefect_memory")
        package.__path__ = [{str(SOURCE.parent)!r}]
        sys.modules["prefect_memory"] = package
        spec = importlib.util.spec_from_file_location("prefect_memory.memory", {str(SOURCE)!r})
        module = importlib.util.module_from_spec(spec)
        sys.modules["prefect_memory.memory"] = module
        spec.loader.exec_module(module)
        assert module.Memory.__mro__[1:] == (object,), module.Memory.__mro__
        print(sorted(m for m in sys.modules if m.startswith("prefect_memory.")))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded = ast.literal_eval(result.stdout.strip())
    assert "prefect_memory.memory" in loaded
    above = [m for m in loaded if m.split(".")[1] in ABOVE]
    assert above == [], f"memory.py loaded {above}"


def test_features_reach_a_memory_from_their_own_packages() -> None:
    import prefect_memory as pm
    from prefect_memory.tabular import Frames

    mem = pm.open_memory("memory://")
    assert isinstance(mem.frames, Frames)
    assert mem.with_namespace("other").frames._memory.namespace == "other"
    assert pm.health(mem).ok


def test_former_frame_methods_still_work_and_warn() -> None:
    import asyncio

    import pandas as pd
    import pytest

    import prefect_memory as pm
    from prefect_memory.tabular.methods import FrameMethods

    mem = pm.open_memory("memory://")
    df = pd.DataFrame({"a": [1, 2]})
    with pytest.warns(DeprecationWarning, match=r"mem\.frames\.put"):
        mem.put_frame("t", df)
    with pytest.warns(DeprecationWarning, match=r"mem\.frames\.append"):
        assert mem.append_frame("t", df) == 4
    with pytest.warns(DeprecationWarning, match=r"mem\.frames\.get"):
        assert mem.get_frame("t")["a"].tolist() == [1, 2, 1, 2]
    with pytest.warns(DeprecationWarning, match=r"mem\.frames\.aget"):
        assert len(asyncio.run(mem.aget_frame("t"))) == 4
    assert FrameMethods.put_frame is pm.Memory.put_frame
