"""One writer process of ``test_hybrid_processes.py``: a hybrid memory used as a Prefect
worker would use it, next to other processes using the same one.

Run as ``python _hybrid_actor.py '<spec as JSON>'``. The actor builds its OWN
:class:`~prefect_memory.hybrid.HybridMemory` from the spec (same primary, same secondary,
same journal file as the other actors), pings both stores, prints ``ready`` and waits for
a line on stdin (``go <t>``: start, ``t`` being the test's ``time.monotonic()`` then;
anything else: leave). It then plays ``ops`` operations drawn from ``random.Random(seed)``
on its own keys (``<name>:k<i>``) and on keys all actors share: a few long-lived ones
(``shared:<j>``) and the key of the current time slot (``slot:<i>``, ``i`` the number of
``slot`` seconds since ``t``: every actor writes it in the same moment, so the last writes
of each such key are contested; with ``"contested": true`` in the spec, every operation
is on that key, and with ``"reads": true`` a third of them read it). The writes: single
sets (some with a TTL far in the future), overwrites, deletes, ``set_many`` and
``delete_many`` batches. Its stdout (line-buffered, one line per event, each written
whole) says what it was told:

- ``try <n> <t0> <json>``: printed *before* operation ``n`` is sent; ``t0`` is
  ``time.monotonic()`` (one clock for every process of the machine), the JSON is
  ``{"op": ..., "writes": {key: value or null for a delete}, "ttl": seconds or null}``
  (a read: ``"op": "get"``, no writes, ``"reads": [key]``);
- ``ack <n> <t1> [<what a read got>]``: printed once the call *returned* (acknowledged),
  ``t1`` just after;
- ``err <n> <t1> <repr>``: the call raised (not acknowledged: it may or may not have
  happened); the actor goes on;
- ``done``: every operation was played; ``closed``: ``mem.close()`` returned (its one
  flush pass included). A process killed in between prints neither.

Each value is ``{"by": name, "n": n, "key": key}``: unique, so a value in a store says which
write put it there.
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

import prefect_memory as pm
from prefect_memory.hybrid import HybridMemory

#: TTL of the writes that carry one: far in the future (nothing expires during a test).
FAR_TTL = 10**6
#: The key of a plan's write that goes to the current time slot's key (see the module).
SLOT = "@slot"


def build(spec: dict[str, Any]) -> HybridMemory:
    """The hybrid memory every actor (and the test's checker) builds from ``spec``."""
    return HybridMemory(
        spec["primary"],
        spec["secondary"],
        strategy=spec["strategy"],
        journal=spec["journal"],
        journal_sync=spec["journal_sync"],
        flush_batch=spec["flush_batch"],
        flush_interval=spec["flush_interval"],
        primary_options=spec.get("primary_options"),
        secondary_options=spec.get("secondary_options"),
        namespace=spec["namespace"],
    )


def own_keys(name: str, n: int) -> list[str]:
    """The keys only actor ``name`` writes."""
    return [f"{name}:k{i:02d}" for i in range(n)]


def shared_keys(n: int) -> list[str]:
    """The keys every actor writes."""
    return [f"shared:{j}" for j in range(n)]


def plan(
    name: str,
    seed: int,
    ops: int,
    n_own: int,
    n_shared: int,
    *,
    contested: bool = False,
    reads: bool = False,
) -> list[dict[str, Any]]:
    """The operations of actor ``name``: ``{"op", "writes", "ttl"}`` each (see module).

    ``contested``: every operation is a set (4 in 5) or a delete of the time slot's key;
    with ``reads``, a third of them are reads of it instead (``get``: no writes).
    """
    rng = random.Random(f"{seed}:{name}")
    mine, shared = own_keys(name, n_own), shared_keys(n_shared)
    out: list[dict[str, Any]] = []
    for n in range(ops):

        def value(key: str, n: int = n) -> dict[str, Any]:
            return {"by": name, "n": n, "key": key}

        draw = rng.random()
        ttl = FAR_TTL if rng.random() < 0.25 else None
        if contested and reads and rng.random() < 1 / 3:
            out.append({"op": "get", "writes": {}, "reads": [SLOT], "ttl": None})
        elif contested:
            write = value(SLOT) if draw < 0.8 else None
            out.append({"op": "set" if write else "delete", "writes": {SLOT: write}, "ttl": None})
        elif draw < 0.32:  # set (or overwrite) one of its own keys
            key = rng.choice(mine)
            out.append({"op": "set", "writes": {key: value(key)}, "ttl": ttl})
        elif draw < 0.44:  # delete one of its own keys
            out.append({"op": "delete", "writes": {rng.choice(mine): None}, "ttl": None})
        elif draw < 0.56:  # a batch of its own keys, sometimes with a shared one
            keys = rng.sample(mine, rng.randint(2, 6))
            if rng.random() < 0.3:
                keys.append(rng.choice([*shared, SLOT]))
            out.append({"op": "set_many", "writes": {k: value(k) for k in keys}, "ttl": ttl})
        elif draw < 0.62:  # a batch of deletes
            keys = rng.sample(mine, rng.randint(2, 4))
            out.append({"op": "delete_many", "writes": dict.fromkeys(keys), "ttl": None})
        elif draw < 0.88:  # a shared key, or the key of the moment
            key = rng.choice(shared) if rng.random() < 0.3 else SLOT
            out.append({"op": "set", "writes": {key: value(key)}, "ttl": ttl})
        else:
            key = rng.choice(shared) if rng.random() < 0.3 else SLOT
            out.append({"op": "delete", "writes": {key: None}, "ttl": None})
    return out


def resolve(op: dict[str, Any], slot: str) -> dict[str, Any]:
    """``op`` with :data:`SLOT` replaced by the key ``slot`` (in its value too)."""
    if SLOT in op.get("reads", ()):
        op = {**op, "reads": [slot if k == SLOT else k for k in op["reads"]]}
    if SLOT not in op["writes"]:
        return op
    writes = {}
    for key, value in op["writes"].items():
        if key == SLOT:
            key, value = slot, None if value is None else {**value, "key": slot}
        writes[key] = value
    return {**op, "writes": writes}


def play(mem: HybridMemory, op: dict[str, Any]) -> str:
    """Send one operation of :func:`plan`; a read says what it got (``key=by#n``, ``key=-``)."""
    writes, kind = op["writes"], op["op"]
    kwargs = {} if op["ttl"] is None else {"ttl": op["ttl"]}
    if kind == "set":
        ((key, value),) = writes.items()
        mem.set(key, value, **kwargs)
    elif kind == "set_many":
        mem.set_many(writes, **kwargs)
    elif kind == "delete":
        (key,) = writes
        mem.delete(key)
    elif kind == "delete_many":
        mem.delete_many(list(writes))
    elif kind == "get":
        got = mem.get_many(op["reads"])
        return ",".join(
            f"{k}={got[k]['by']}#{got[k]['n']}" if k in got else f"{k}=-" for k in op["reads"]
        )
    else:  # pragma: no cover - plan() draws only the kinds above
        raise AssertionError(f"unknown operation {kind!r}")
    return ""


def main(spec: dict[str, Any]) -> int:
    """Play the actor of ``spec`` (see the module docstring); the exit status."""
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    name = spec["name"]
    ops = plan(
        name, spec["seed"], spec["ops"], spec["own"], spec["shared"],
        contested=spec.get("contested", False), reads=spec.get("reads", False),
    )  # fmt: skip
    mem = build(spec)
    mem.ping()
    print("ready")
    word, *start = sys.stdin.readline().split()
    if word != "go":
        mem.close()
        return 0
    t_go, slot = float(start[0]), float(spec["slot"])
    for n, op in enumerate(ops):
        op = resolve(op, f"slot:{int((time.monotonic() - t_go) / slot):04d}")
        print(f"try {n} {time.monotonic():.6f} {json.dumps(op, separators=(',', ':'))}")
        try:
            got = play(mem, op)
        except pm.PrefectMemoryError as err:
            print(f"err {n} {time.monotonic():.6f} {err!r}".replace("\n", " "))
            continue
        print(f"ack {n} {time.monotonic():.6f} {got}".rstrip())
    print("done")
    mem.close()
    print("closed")
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
