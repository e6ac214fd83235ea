"""Bookkeeping of a fault test: what was tried, acknowledged, injected, and what survived.

Every write gets a unique value (``{"key": k, "op": n}``), so the value found afterwards
tells which write it came from. For each key the *acceptable* final states are the last
acknowledged write and any write attempted after it (a write that failed may still have
landed: it was never acknowledged, so either outcome is allowed). A key whose final state
is not acceptable is an entry lost (or a stale value resurrected): the count must be 0.
Reads made during the faults are checked the same way (``stale_reads``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import prefect_memory as pm

MISSING = object()


@dataclass
class _Op:
    value: Any  # MISSING for a delete
    acked: bool


@dataclass
class Ledger:
    """Operations and faults of one test (see the module docstring)."""

    name: str
    tried: int = 0
    acknowledged: int = 0
    failed: int = 0
    reads: int = 0
    stale_reads: int = 0
    faults: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    checked: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    max_latency: float = 0.0
    started: float = field(default_factory=time.monotonic)
    ops: dict[str, list[_Op]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    found: dict[str, Any] = field(default_factory=dict)

    # -- recording --------------------------------------------------------------------------
    def lap(self, phase: str) -> None:
        """Note the seconds since the test started, at the end of ``phase``."""
        self.notes.setdefault("phases", {})[phase] = round(time.monotonic() - self.started, 2)

    def fault(self, kind: str) -> None:
        """Record an injected fault (``"kill -9 redis"``, ``"stall mongo"``...)."""
        self.faults.append(kind)

    def _run(self, key: str, value: Any, call: Callable[[], Any]) -> bool:
        self.tried += 1
        op = _Op(value, acked=False)
        self.ops.setdefault(key, []).append(op)
        started = time.monotonic()
        try:
            call()
        except pm.PrefectMemoryError as err:
            self.failed += 1
            name = type(err).__name__
            self.errors[name] = self.errors.get(name, 0) + 1
            return False
        finally:
            self.max_latency = max(self.max_latency, time.monotonic() - started)
        op.acked = True
        self.acknowledged += 1
        return True

    def put(self, mem: Any, key: str) -> bool:
        """Write a unique value to ``key``; return whether it was acknowledged."""
        value = {"key": key, "op": self.tried}
        return self._run(key, value, lambda: mem.set(key, value))

    def delete(self, mem: Any, key: str) -> bool:
        """Delete ``key``; return whether it was acknowledged."""
        return self._run(key, MISSING, lambda: mem.delete(key))

    def put_many(self, mem: Any, keys: Iterable[str]) -> bool:
        """One batch write of unique values (acknowledged or not as a whole)."""
        values = {k: {"key": k, "op": self.tried + i} for i, k in enumerate(keys)}
        ok = False
        for i, (key, value) in enumerate(values.items()):
            if i == 0:
                ok = self._run(key, value, lambda: mem.set_many(values))
            else:  # the same call: same outcome
                self.tried += 1
                self.ops.setdefault(key, []).append(_Op(value, acked=ok))
                self.acknowledged += ok
                self.failed += not ok
        return ok

    def acceptable(self, key: str) -> list[Any]:
        """Final states allowed for ``key`` right now."""
        ops = self.ops.get(key, [])
        last = max((i for i, op in enumerate(ops) if op.acked), default=None)
        allowed = [MISSING] if last is None else []
        start = 0 if last is None else last
        allowed += [op.value for op in ops[start:]]
        return allowed

    def read(self, mem: Any, key: str) -> None:
        """Read ``key`` (during faults); count a stale answer. A failed read is not stale."""
        self.reads += 1
        started = time.monotonic()
        try:
            value = mem.get(key, MISSING)
        except pm.PrefectMemoryError as err:
            name = f"read {type(err).__name__}"
            self.errors[name] = self.errors.get(name, 0) + 1
            return
        finally:
            self.max_latency = max(self.max_latency, time.monotonic() - started)
        if not any(_same(value, ok) for ok in self.acceptable(key)):
            self.stale_reads += 1

    # -- checking ---------------------------------------------------------------------------
    def verify(self, found: Mapping[str, Any], where: str = "memory") -> list[str]:
        """Compare what a store holds now (``{key: value}``) with the ledger; return lost keys."""
        lost = []
        for key in self.ops:
            value = found.get(key, MISSING)
            if not any(_same(value, ok) for ok in self.acceptable(key)):
                lost.append(key)
                self.found[f"{where}:{key}"] = "missing" if value is MISSING else value
        self.checked = max(self.checked, len(self.ops))
        self.lost.extend(f"{where}:{k}" for k in lost)
        return lost

    def verify_unique(self, where: str, keys: Iterable[str]) -> None:
        """Record keys listed more than once (a scan, or a key living in several tiers)."""
        seen: set[str] = set()
        for key in keys:
            if key in seen:
                self.duplicated.append(f"{where}:{key}")
            seen.add(key)

    def explain(self, lost: list[str]) -> list[str]:
        """``where:key`` entries with what was found and the key's history (for failures)."""
        out = []
        for item in lost:
            key = item.split(":", 1)[1]
            history = [
                ("del" if op.value is MISSING else op.value["op"], op.acked)
                for op in self.ops.get(key, [])
            ]
            out.append(f"{item} found={self.found.get(item)!r} history={history[-6:]}")
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "test": self.name,
            "operations": self.tried,
            "acknowledged": self.acknowledged,
            "failed": self.failed,
            "reads": self.reads,
            "faults": len(self.faults),
            "fault_kinds": sorted(set(self.faults)),
            "keys_checked": self.checked,
            "lost": len(self.lost),
            "stale_reads": self.stale_reads,
            "duplicated": len(self.duplicated),
            "max_op_seconds": round(self.max_latency, 3),
            "errors": self.errors,
            "seconds": round(time.monotonic() - self.started, 2),
            **self.notes,
        }

    def line(self) -> str:
        s = self.summary()
        return (
            f"{s['test']}: ops={s['operations']} acked={s['acknowledged']} failed={s['failed']} "
            f"reads={s['reads']} faults={s['faults']} ({', '.join(s['fault_kinds'])}) "
            f"keys={s['keys_checked']} LOST={s['lost']} stale_reads={s['stale_reads']} "
            f"duplicated={s['duplicated']} max_op={s['max_op_seconds']}s in {s['seconds']}s"
        )

    def assert_clean(self) -> None:
        """Fail unless nothing was lost, stale or duplicated."""
        assert not self.lost, f"{len(self.lost)} entries lost: {self.explain(self.lost[:5])}"
        assert not self.stale_reads, f"{self.stale_reads} stale reads"
        assert not self.duplicated, f"duplicated: {self.duplicated[:10]}"


def _same(value: Any, expected: Any) -> bool:
    if expected is MISSING or value is MISSING:
        return value is expected
    return bool(value == expected)


__all__ = ["MISSING", "Ledger"]
