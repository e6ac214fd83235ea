"""Modules that moved keep their former paths: the same objects, and pickles made before load.

Issue 16 split ``prefect_memory.resilience`` into the hybrid machinery
(:mod:`prefect_memory.hybrid`) and resilience proper; ``resilience/lanes.py`` became
``hybrid/pending.py``. Modules whose names did not say their job were renamed: ``_twins`` ->
``aio``, ``_exports`` -> ``lazy_exports``, ``lazy`` -> ``lazy_view``, ``blocks/parts`` ->
``blocks/composite_parts``, ``blocks/payloads`` -> ``blocks/result_payloads``, ``shared/memory``
-> ``shared/cached``, ``plugins/_paths`` -> ``plugins/local_paths`` and ``plugins/_sqlite`` ->
``plugins/sqlite_wal``.
"""

from __future__ import annotations

import hashlib
import importlib
import pickle
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import prefect_memory as pm
from prefect_memory.plugins.base import Record
from prefect_memory.plugins.inprocess import InProcessBackend

#: former module path -> where it lives now
MOVED_MODULES = {
    "prefect_memory.resilience.hybrid": "prefect_memory.hybrid.backend",
    "prefect_memory.resilience.lanes": "prefect_memory.hybrid.pending",
    "prefect_memory.resilience.journal": "prefect_memory.hybrid.journal",
    "prefect_memory.resilience.fallback": "prefect_memory.hybrid.fallback",
    "prefect_memory.resilience.sync": "prefect_memory.hybrid.sync",
    "prefect_memory._twins": "prefect_memory.aio",
    "prefect_memory._exports": "prefect_memory.lazy_exports",
    "prefect_memory.lazy": "prefect_memory.lazy_view",
    "prefect_memory.blocks.parts": "prefect_memory.blocks.composite_parts",
    "prefect_memory.blocks.payloads": "prefect_memory.blocks.result_payloads",
    "prefect_memory.shared.memory": "prefect_memory.shared.cached",
    "prefect_memory.plugins._paths": "prefect_memory.plugins.local_paths",
    "prefect_memory.plugins._sqlite": "prefect_memory.plugins.sqlite_wal",
}

#: every name ``prefect_memory.resilience`` exported before the split
RESILIENCE_NAMES = (
    "BackendHealth",
    "Backoff",
    "BreakerEvent",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpen",
    "ConstantBackoff",
    "ExponentialBackoff",
    "HealthReport",
    "HybridBackend",
    "HybridMemory",
    "HybridWriteError",
    "Journal",
    "ResilientBackend",
    "Retry",
    "SyncReport",
    "health",
    "prefect_events_listener",
    "protect",
)

#: names users and tests import from the former modules
FORMER_NAMES = {
    "prefect_memory.resilience.hybrid": (
        "HybridBackend",
        "HybridWriteError",
        "Strategy",
        "SyncReport",
        "default_journal_path",
    ),
    "prefect_memory.resilience.lanes": ("Lanes",),
    "prefect_memory.resilience.journal": ("Journal", "Entry", "Doubt", "pack_record"),
    "prefect_memory.resilience.fallback": ("FallbackReads", "apply_entries", "coalesce", "merge"),
    "prefect_memory.resilience.sync": ("SyncReport", "reconcile"),
    "prefect_memory._twins": ("async_twin",),
    "prefect_memory._exports": ("lazy_exports",),
    "prefect_memory.lazy": ("LazyView",),
    "prefect_memory.blocks.parts": (
        "MemoryTier",
        "TierRule",
        "StoreBlock",
        "STORE_BLOCKS",
        "fix_part_types",
        "resolve_reference",
        "tier_references",
    ),
    "prefect_memory.blocks.payloads": (
        "MIN_SIGNING_KEY_LENGTH",
        "READ_GRACE_SECONDS",
        "RESULT_TAG",
        "ResultSignatureError",
        "_RecentReads",
        "payload_kind",
        "sign_result",
        "verify_result",
    ),
    "prefect_memory.shared.memory": ("SharedBackend", "SharedMemory"),
    "prefect_memory.plugins._paths": ("local_path_from_url",),
    "prefect_memory.plugins._sqlite": ("connect_wal",),
}


@pytest.mark.parametrize(("old", "new"), sorted(MOVED_MODULES.items()))
def test_a_former_module_path_is_the_new_module(old: str, new: str) -> None:
    assert importlib.import_module(old) is importlib.import_module(new)
    for name in FORMER_NAMES[old]:
        assert getattr(importlib.import_module(old), name) is getattr(
            importlib.import_module(new), name
        )


def test_the_resilience_package_still_exports_every_former_name() -> None:
    import prefect_memory.hybrid as hybrid
    import prefect_memory.resilience as resilience

    assert set(RESILIENCE_NAMES) <= set(resilience.__all__)
    for name in RESILIENCE_NAMES:
        assert getattr(resilience, name) is not None
    namespace: dict[str, object] = {}
    exec("from prefect_memory.resilience import *", namespace)
    assert set(RESILIENCE_NAMES) <= set(namespace)
    for name in ("HybridBackend", "HybridMemory", "HybridWriteError", "Journal", "SyncReport"):
        assert getattr(resilience, name) is getattr(hybrid, name)
    assert resilience.HybridMemory is pm.HybridMemory
    with pytest.raises(AttributeError):
        resilience.NoSuchName  # noqa: B018


@pytest.mark.parametrize(
    "first",
    ["prefect_memory.hybrid", "prefect_memory.resilience", "prefect_memory.resilience.lanes"],
)
def test_either_package_can_be_imported_first(first: str) -> None:
    """The two packages import each other's modules; any first import resolves the cycle."""
    source = Path(pm.__file__).parent
    code = (
        "import importlib, sys, types\n"
        "package = types.ModuleType('prefect_memory')\n"
        f"package.__path__ = [{str(source)!r}]\n"
        "sys.modules['prefect_memory'] = package\n"
        f"importlib.import_module({first!r})\n"
        "import prefect_memory.hybrid as h, prefect_memory.resilience as r\n"
        "import prefect_memory.resilience.hybrid as old\n"
        "assert old is h.backend and r.HybridMemory is h.HybridMemory\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr


def _as_before_the_move(blob: bytes) -> bytes:
    """A protocol-0 pickle rewritten to name the former modules, as pickles made before did."""
    for old, new in MOVED_MODULES.items():
        blob = blob.replace(f"{new}\n".encode(), f"{old}\n".encode())
    return blob


def test_pickles_made_before_the_move_still_load(tmp_path: Path) -> None:
    import prefect_memory.hybrid as hybrid

    backend = hybrid.HybridBackend(
        InProcessBackend("moved-a"), InProcessBackend("moved-b"), journal=str(tmp_path / "j.db")
    )
    lanes, journal = backend.lanes, backend.journal
    report = hybrid.SyncReport()
    for obj, kind in (
        (backend, hybrid.HybridBackend),
        (lanes, hybrid.Lanes),
        (journal, hybrid.Journal),
        (report, hybrid.SyncReport),
    ):
        blob = _as_before_the_move(pickle.dumps(obj, protocol=0))
        assert b"prefect_memory.resilience." in blob
        assert b"prefect_memory.hybrid." not in blob
        clone = pickle.loads(blob)
        assert type(clone) is kind
    clone = pickle.loads(_as_before_the_move(pickle.dumps(backend, protocol=0)))
    mem = pm.Memory(clone, "ns")
    mem.set("k", 1)
    assert mem.get("k") == 1
    assert clone.journal.path == journal.path


def test_a_hybrid_memory_pickled_under_its_former_name_loads(tmp_path: Path) -> None:
    mem = pm.HybridMemory("memory://moved-c", "memory://moved-d", journal=str(tmp_path / "j.db"))
    mem.set("k", 1)
    blob = pickle.dumps(mem, protocol=0)
    assert b"prefect_memory.hybrid\nHybridMemory" in blob
    blob = blob.replace(
        b"prefect_memory.hybrid\nHybridMemory", b"prefect_memory.resilience\nHybridMemory"
    )
    clone = pickle.loads(_as_before_the_move(blob))
    assert type(clone) is pm.HybridMemory
    assert clone.get("k") == 1


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_a_former_module_path_can_be_imported_first(old: str) -> None:
    """A fresh process that imports only the former path gets the new module."""
    code = (
        "import importlib\n"
        f"old = importlib.import_module({old!r})\n"
        f"assert old is importlib.import_module({MOVED_MODULES[old]!r})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr


def test_renamed_modules_objects_pickled_under_their_former_names_load() -> None:
    from prefect_memory.blocks import ResultSignatureError, TierRule

    rule = TierRule(**{"from": "hot", "to": "cold", "condition": "idle > 1h"})
    error = ResultSignatureError("the stored result 'r' has a wrong signature")
    for obj in (rule, error):
        blob = _as_before_the_move(pickle.dumps(obj, protocol=0))
        assert b"prefect_memory.blocks.parts\n" in blob or b"blocks.payloads\n" in blob
        clone = pickle.loads(blob)
        assert type(clone) is type(obj)
    assert pickle.loads(_as_before_the_move(pickle.dumps(rule, protocol=0))) == rule


def test_the_journal_file_is_unchanged(tmp_path: Path) -> None:
    """The journal's name and tables are those written before the move."""
    from prefect_memory.resilience.hybrid import default_journal_path
    from prefect_memory.resilience.journal import Journal

    primary, secondary = InProcessBackend(), InProcessBackend()
    names = f"{primary.url or '?'}+{secondary.url or '?'}"
    digest = hashlib.sha1(names.encode(), usedforsecurity=False).hexdigest()[:16]
    assert default_journal_path(primary, secondary) == f".prefect-memory/journal-{digest}.db"
    journal = Journal(str(tmp_path / "j.db"))
    journal.append("ns", puts={"k": Record(b"v", 1.0, 1.0, 1.0)})
    tables = {
        row[0]
        for row in sqlite3.connect(journal.path).execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
    }
    assert {"pm_journal", "pm_doubt"} <= tables
