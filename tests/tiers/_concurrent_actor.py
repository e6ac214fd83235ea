"""What one actor process of ``test_concurrent_tiers.py`` runs (``forkserver`` or ``spawn``).

Every actor builds its OWN :class:`TieredMemory` from the same JSON-able spec, as two
Prefect workers would, says ``ready`` on its queue, waits for the common ``go`` event (so
that all actors overlap), plays its role and puts one ``done`` message with what it was
acknowledged (or ``error`` with the traceback). Roles:

- ``migrate``: ``mem.migrate(batch_size=...)``, ``rounds`` times (or until ``stop`` is set
  with ``until_stop``); reports the runs' ``total_moved`` / ``skipped``. With ``progress``
  it puts a ``batch`` message after every batch (a test kills it after a few).
- ``read``: reads the keys in chunks with ``mem.get_many`` (promotion on read), ``passes``
  times (or until ``stop``); checks each answer against the initial value of the key
  (keys in ``volatile`` may change or vanish: only their ``key`` field is checked).
- ``write``: sets new values, deletes and ``invalidate_tags`` on its keys; logs every
  operation with whether it was acknowledged (and each invalidation with the count it
  returned); sets ``stop`` when done.

The spec::

    {"namespace": "...", "promote": "home", "rules": [{"from", "to", "condition"}],
     "tiers": [{"name": "hot", "url": "redis://...", "options": {...}, "patterns": [...]},
               ...]}
"""

from __future__ import annotations

import contextlib
import random
import traceback
from typing import Any

import prefect_memory as pm
from prefect_memory.tiers import Tier, TieredMemory

MISSING = object()


def initial_value(key: str) -> dict[str, Any]:
    """The value every key starts with (readers check their answers against it)."""
    return {"key": key, "v": 0}


def build(spec: dict[str, Any], **overrides: Any) -> TieredMemory:
    """The tiered memory every actor (and the test's checker) builds from ``spec``."""
    tiers = [
        Tier(t["name"], pm.open_backend(t["url"], **t.get("options", {})),
             patterns=tuple(t.get("patterns", ())))
        for t in spec["tiers"]
    ]  # fmt: skip
    options = {"namespace": spec["namespace"], "promote": spec.get("promote", "home"), **overrides}
    return TieredMemory(tiers, spec.get("rules", []), **options)


def _migrate(mem: TieredMemory, params: dict[str, Any], queue: Any, stop: Any) -> dict[str, Any]:
    progress = None
    if params.get("progress"):
        batches = [0]

        def progress(report: Any) -> None:
            batches[0] += 1
            queue.put(("batch", batches[0], report.total_moved))

    out = {"moved": 0, "skipped": 0, "scanned": 0, "rounds": 0, "runs": []}
    while True:
        report = mem.migrate(batch_size=params["batch_size"], progress=progress)
        out["moved"] += report.total_moved
        out["skipped"] += report.skipped
        out["scanned"] += report.scanned
        out["rounds"] += 1
        out["runs"].append(report.moved)
        if out["rounds"] >= params.get("rounds", 1) and (
            not params.get("until_stop") or stop.is_set()
        ):
            return out


def _read(mem: TieredMemory, params: dict[str, Any], queue: Any, stop: Any) -> dict[str, Any]:
    keys: list[str] = params["keys"]
    volatile = set(params.get("volatile", ()))
    chunk = params.get("chunk", 20)
    out: dict[str, Any] = {"reads": 0, "false_misses": 0, "wrong": 0, "passes": 0}
    bad: list[str] = []
    order = list(keys)
    if params.get("reverse"):
        order.reverse()
    while True:
        for start in range(0, len(order), chunk):
            batch = order[start : start + chunk]
            found = mem.get_many(batch)  # counts an access: promotes what it finds colder
            for key in batch:
                out["reads"] += 1
                value = found.get(key, MISSING)
                if value is MISSING:
                    if key not in volatile:
                        out["false_misses"] += 1
                        bad.append(f"{key}: missing")
                    continue
                ok = value.get("key") == key if key in volatile else value == initial_value(key)
                if not ok:
                    out["wrong"] += 1
                    bad.append(f"{key}: {value!r}")
        out["passes"] += 1
        if out["passes"] >= params.get("passes", 1) and (
            not params.get("until_stop") or stop.is_set()
        ):
            break
    out["bad"] = bad[:10]
    return out


def _write(mem: TieredMemory, params: dict[str, Any], queue: Any, stop: Any) -> dict[str, Any]:
    """Random sets / deletes / tag invalidations; the log says what was acknowledged.

    Log rows: ``[n, kind, key, value_or_None, acked]``; an ``invalidate_tags`` is logged as
    one ``delete`` row per key the writer knows to carry the tag (it is the only writer).
    """
    rng = random.Random(params["seed"])
    keys: list[str] = params["keys"]
    tags: list[str] = params["tags"]
    current: dict[str, str | None] = dict(params["initial_tags"])  # key -> tag (None: deleted)
    log: list[list[Any]] = []
    invalidated: list[list[Any]] = []  # [n, tag, keys known to carry it, count removed]
    errors: list[str] = []
    try:
        for n in range(params["ops"]):
            draw = rng.random()
            if draw < 0.6:
                key, tag = rng.choice(keys), rng.choice(tags)
                value = {"key": key, "op": n}
                try:
                    mem.set(key, value, tags=[tag])
                    acked = True
                except pm.PrefectMemoryError as err:
                    acked = False
                    errors.append(repr(err))
                current[key] = tag
                log.append([n, "set", key, value, acked])
            elif draw < 0.85:
                key = rng.choice(keys)
                try:
                    mem.delete(key)
                    acked = True
                except pm.PrefectMemoryError as err:
                    acked = False
                    errors.append(repr(err))
                current[key] = None
                log.append([n, "delete", key, None, acked])
            else:
                tag = rng.choice(tags)
                carrying = [k for k, t in current.items() if t == tag]
                try:
                    removed = mem.invalidate_tags(tag)
                    acked = True
                except pm.PrefectMemoryError as err:
                    acked, removed = False, None
                    errors.append(repr(err))
                invalidated.append([n, tag, carrying, removed])
                for key in carrying:
                    current[key] = None
                    log.append([n, "delete", key, None, acked])
    finally:
        stop.set()
    return {"log": log, "invalidated": invalidated, "errors": errors[:10]}


ROLES = {"migrate": _migrate, "read": _read, "write": _write}


def run(
    name: str, spec: dict[str, Any], params: dict[str, Any], queue: Any, go: Any, stop: Any
) -> None:
    """Entry point of one actor process (see the module docstring)."""
    mem = None
    try:
        mem = build(spec)
        mem.ping()
        queue.put(("ready", name))
        if not go.wait(240):
            raise RuntimeError("never told to start")
        if stop.is_set():  # the test gave up before the start (another actor failed)
            queue.put(("done", {"aborted": True}))
            return
        result = ROLES[params["role"]](mem, params, queue, stop)
        queue.put(("done", result))
    except BaseException:
        queue.put(("error", traceback.format_exc()))
        stop.set()
    finally:
        if mem is not None:
            with contextlib.suppress(Exception):
                mem.close()
