"""The batch hot paths of issue 19 part 3: still counted, still bounded, still one trip.

- ``get_many`` on Redis (plain and as a hybrid primary) counts one access per key it
  answers in the single script call of its batch (pinned with Redis's own command
  statistics: one ``EVALSHA``, no other command sent by the client);
- ``set_many`` on Redis checks each distinct expiry of a batch before any write, even
  when most records share theirs;
- the codec's fast path for small plain values keeps every bound and error of the full
  path (``max_items`` and ``max_decoded_size`` changed after construction included);
- the journal inserts a batch in multi-row statements: the sequence numbers of a batch
  larger than one statement ascend, one per row, and replay in the order written.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgpack
import pytest
import redis

import prefect_memory as pm
from prefect_memory.codecs import Codec
from prefect_memory.errors import InvalidTTLError, SerializationError
from prefect_memory.hybrid.journal import SECONDARY, Journal
from prefect_memory.plugins.base import Record
from prefect_memory.plugins.redis import RedisBackend

VALUE = {"user_id": 7, "score": 0.5, "tags": ["a", "b"]}


def _command_calls(client: redis.Redis) -> dict[str, int]:
    """Calls per command since the last ``CONFIG RESETSTAT`` (client-sent and in-script)."""
    return {
        name.removeprefix("cmdstat_"): int(stats["calls"])
        for name, stats in client.info("commandstats").items()
    }


@pytest.fixture
def raw_redis(redis_server: Any) -> Any:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def test_redis_get_many_counts_access_in_one_script_call(redis_server: Any, raw_redis: Any) -> None:
    prefix = "bp" + uuid.uuid4().hex[:8]
    mem = pm.open_memory(redis_server.url, namespace="batch", key_prefix=prefix)
    keys = [f"k{i}" for i in range(200)]
    mem.set_many(dict.fromkeys(keys, VALUE), ttl=600)
    mem.get_many(keys[:1])  # the namespace's layout check and the script are cached
    raw_redis.config_resetstat()
    got = mem.get_many([*keys, "missing"])
    calls = _command_calls(raw_redis)
    assert got == dict.fromkeys(keys, VALUE)
    # one round trip: a single script call; inside it, one HSET per hit and one HMGET
    # per key of a probed chunk holding hits (the miss shares the last chunk)
    assert calls.get("evalsha") == 1
    assert calls.get("hmget") == len(keys) + 1
    assert calls.get("hset") == len(keys)
    assert "get" not in calls and "mget" not in calls
    counts = {k: mem.info(k).access_count for k in (keys[0], keys[1], keys[-1])}
    assert counts == {keys[0]: 2, keys[1]: 1, keys[-1]: 1}
    mem.clear()
    mem.close()


def test_hybrid_get_many_counts_access_on_the_primary(
    redis_server: Any, mongo_server: Any, raw_redis: Any, tmp_path: Any
) -> None:
    ns = "hb" + uuid.uuid4().hex[:8]
    mem = pm.HybridMemory(
        redis_server.url, mongo_server.url, journal=str(tmp_path / "j.db"), namespace=ns
    )
    keys = [f"k{i}" for i in range(50)]
    mem.set_many(dict.fromkeys(keys, VALUE), ttl=600)
    mem.get_many(keys[:1])
    raw_redis.config_resetstat()
    assert mem.get_many(keys) == dict.fromkeys(keys, VALUE)
    assert mem.get_many(keys) == dict.fromkeys(keys, VALUE)
    calls = _command_calls(raw_redis)
    assert calls.get("evalsha") == 2  # one script call per get_many, nothing per key
    assert calls.get("hset") == 2 * len(keys)
    info = mem.primary.get_many(ns, [keys[0], keys[5]], now=time.time(), touch=False)
    assert (info[keys[0]].access_count, info[keys[5]].access_count) == (3, 2)
    mem.clear()
    mem.close()


def test_redis_put_checks_every_distinct_expiry(redis_server: Any) -> None:
    backend = RedisBackend(redis_server.url, key_prefix="bp" + uuid.uuid4().hex[:8])
    now = time.time()
    shared = now + 60
    good = {f"k{i}": Record(b"\x01\x00", now, now, now, expires_at=shared) for i in range(5)}
    # equal to True once hashed, but not a number: refused although 1 == True
    bad = Record(b"\x01\x00", now, now, now, expires_at=True)  # type: ignore[arg-type]
    for records in ({**good, "bad": bad}, {"bad": bad, **good}):
        with pytest.raises(InvalidTTLError, match="'bad'"):
            backend.put_many("ns", records, now=now)
    far = Record(b"\x01\x00", now, now, now, expires_at=now + 10**12)
    with pytest.raises(InvalidTTLError, match="'far'"):
        backend.put_many("ns", {**good, "far": far}, now=now)
    assert backend.get_many("ns", list(good), now=now) == {}  # nothing was written
    backend.close()


@pytest.mark.parametrize(
    ("codec", "value", "error"),
    [
        (Codec(max_items=10), list(range(20)), "max_items"),
        (Codec(max_decoded_size=16), "x" * 64, "max_decoded_size|larger"),
    ],
)
def test_codec_fast_path_keeps_bounds(codec: Codec, value: Any, error: str) -> None:
    data = Codec().encode(value)
    with pytest.raises(SerializationError, match=error):
        codec.decode(data)


def test_codec_fast_path_follows_bounds_changed_later() -> None:
    codec = Codec()
    data = codec.encode(list(range(20)))
    assert codec.decode(data) == list(range(20))
    codec.max_items = 10
    with pytest.raises(SerializationError, match="max_items"):
        codec.decode(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\x01\xc1",  # msgpack's never-used byte
        b"\x01\x92\x01",  # an array cut short
        b"\x01" + msgpack.packb(msgpack.ExtType(99, b"\x00" * 4)) + b"\x00",  # extra data
        bytearray(b"\x01\xc1"),
        b"",
        b"\x07\x00",
    ],
)
def test_codec_fast_path_hostile_bytes_raise_serialization_error(data: bytes) -> None:
    with pytest.raises(SerializationError):
        Codec().decode(data)


def test_codec_fast_path_round_trips_container_extensions() -> None:
    codec = Codec()
    value = {"t": (1, 2), "s": {3}, "f": frozenset({4}), "nested": [(5, (6,))]}
    assert codec.decode(codec.encode(value)) == value
    with pytest.raises(SerializationError, match="pickle"):
        codec.decode(Codec(pickle=True).encode(object.__new__(_Opaque)))


class _Opaque:
    pass


def test_journal_batch_sequence_numbers_ascend(tmp_path: Any) -> None:
    journal = Journal(str(tmp_path / "j.db"), sync="normal")
    puts = {f"k{i:04d}": Record(str(i).encode(), 1.0, float(i), 1.0) for i in range(401)}
    seqs = journal.append("ns", puts=puts)
    assert seqs == list(range(seqs[0], seqs[0] + len(puts)))
    more, busy = journal.append_checked("ns", puts={"k0000": Record(b"again", 1.0, 9e3, 1.0)})
    assert more == [seqs[-1] + 1] and busy is False
    pending = journal.pending(1000, SECONDARY)
    assert [e.seq for e in pending] == [*seqs, *more]
    assert [e.key for e in pending] == [*puts, "k0000"]
    assert pending[-1].record is not None and pending[-1].record.value == b"again"


def test_journal_single_write_is_one_statement_and_reports_the_primary_lane(tmp_path: Any) -> None:
    """A write-behind single write appends and checks the primary's lane in one statement
    (its own transaction); the check sees queued primary writes and keys in doubt."""
    journal = Journal(str(tmp_path / "j.db"), sync="normal")
    journal.append("ns", puts={"seed": Record(b"s", 1.0, 1.0, 1.0)})  # the file exists
    statements: list[str] = []
    journal._conn().set_trace_callback(statements.append)
    seqs, busy = journal.append_checked("ns", puts={"a": Record(b"1", 1.0, 2.0, 1.0)})
    assert (len(seqs), busy) == (1, False)
    assert len(statements) == 1 and statements[0].startswith("INSERT"), statements
    journal._conn().set_trace_callback(None)
    journal.append("ns", deletes=["x"], at=3.0, lanes=("primary",))
    assert journal.append_checked("ns", deletes=["a"], at=4.0)[1] is True
    journal.remove(e.seq for e in journal.pending(10, "primary"))
    assert journal.append_checked("ns", puts={"b": Record(b"2", 1.0, 5.0, 1.0)})[1] is False
    journal.doubt("primary", "ns", ["b"], due=time.time() + 60)
    assert journal.append_checked("ns", puts={"c": Record(b"3", 1.0, 6.0, 1.0)})[1] is True
    assert [e.key for e in journal.pending(10, SECONDARY)] == ["seed", "a", "a", "b", "c"]


def test_journal_single_write_that_cannot_commit_records_nothing(tmp_path: Any) -> None:
    journal = Journal(str(tmp_path / "j.db"), sync="normal")
    journal.append("ns", puts={"seed": Record(b"s", 1.0, 1.0, 1.0)})
    other = journal._conn().__class__(str(tmp_path / "j.db"), isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock: the insert cannot run
    journal._conn().execute("PRAGMA busy_timeout = 50")
    with pytest.raises(pm.errors.BackendUnavailable, match="journal"):
        journal.append_checked("ns", puts={"a": Record(b"1", 1.0, 2.0, 1.0)})
    other.execute("ROLLBACK")
    assert [e.key for e in journal.pending(10, SECONDARY)] == ["seed"]
