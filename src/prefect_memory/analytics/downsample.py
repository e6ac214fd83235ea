"""The downsampling engine: recompute the buckets of dirty chunks, trim what expired.

One run of a series:

1. trim raw chunks and bucket blobs past their retention (counted from the watermark;
   again at the end, for buckets just written);
2. read the dirty chunks in batches, each batch one MULTI/EXEC snapshot of the chunks'
   versions and raw strings, with the one-copy reader of :mod:`._resp` (the next batch is
   read on a second thread while this one is aggregated: numpy releases the GIL);
3. sort a chunk only if a late point broke its order (a stable sort of nearly sorted
   data: cheap, so the chunk is not written back), aggregate the finest resolution from
   the raw points and the coarser ones from its states when the finest interval divides
   theirs;
4. write the bucket blobs with one Lua call per batch that compares versions: blobs are
   written only if computed from a newer version than the stored ones, and a chunk leaves
   the dirty set only if nothing was appended since it was read. A concurrent writer (or a
   second downsampler) therefore never makes a stale result stick.

A report counts only what its run did: the chunks (their points, buckets) the Lua call
wrote, the chunks and blobs its trim removed. Two runs at once, or a partition of the
``downsample_analytics`` flow retried after its worker was killed, recompute a chunk
from the whole chunk and overwrite its blobs (never add to them), and exactly one of them
writes each version of a chunk: the reports of all runs add up to one run's.

Example:
    >>> report = DownsampleReport("cpu", chunks=3, points=10800, buckets={"1m": 180})
    >>> report.as_dict()["buckets"], report.summary()
    ({'1m': 180}, 'cpu: 3 chunks, 10800 points, 180 buckets (1m: 180), 0 late, 0.000s')
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BackendError
from .aggregate import merge_states, state_dtype, states_from_points
from .tsconfig import encode_states

if TYPE_CHECKING:
    from .timeseries import TimeSeries

#: Chunks read per snapshot (one MULTI/EXEC).
BATCH_CHUNKS = 32

# KEYS[1] = the series base. ARGV: nchunks, nlevels, level labels..., then per chunk:
# id, version read, one blob per level ('' = none). Returns the chunks written, the chunks
# cleared from the dirty set, and a 1/0 flag per chunk: written by this call.
_LUA_WRITE = """
local base, call = KEYS[1], redis.call
local nc, nl = tonumber(ARGV[1]), tonumber(ARGV[2])
local labels = {}
for j = 1, nl do labels[j] = ARGV[2 + j] end
local i = 3 + nl
local written, cleared, flags = 0, 0, {}
for _ = 1, nc do
  local id, seen = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local cur = tonumber(call('HGET', base .. 'v', id) or '0')
  local done = tonumber(call('HGET', base .. 'av', id) or '-1')
  if seen > done and call('EXISTS', base .. 'r:' .. id .. ':t') == 1 then
    for j = 1, nl do
      local blob, key = ARGV[i + j - 1], base .. 'a:' .. labels[j] .. ':' .. id
      if blob == '' then
        call('DEL', key); call('ZREM', base .. 'i:' .. labels[j], id)
      else
        call('SET', key, blob); call('ZADD', base .. 'i:' .. labels[j], id, id)
      end
    end
    call('HSET', base .. 'av', id, seen)
    written = written + 1
    flags[#flags + 1] = 1
  else
    flags[#flags + 1] = 0
  end
  if cur == seen then
    call('SREM', base .. 'd', id)
    cleared = cleared + 1
  end
  i = i + nl
end
return {written, cleared, flags}
"""


@dataclass
class DownsampleReport:
    """What one downsampling run of a series did."""

    series: str
    chunks: int = 0
    points: int = 0
    buckets: dict[str, int] = field(default_factory=dict)
    #: Chunks whose buckets existed already: late points (or a chunk still filling).
    late_chunks: int = 0
    #: Chunks sorted in memory (late points had broken their order).
    sorted_chunks: int = 0
    #: Chunks appended to while being processed: left dirty for the next run.
    retry_chunks: int = 0
    #: Chunks read but not written: another run (at once, or an earlier attempt of a
    #: retried partition) wrote that version first, or the chunk was trimmed meanwhile.
    skipped_chunks: int = 0
    trimmed_chunks: int = 0
    trimmed_buckets: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The report as plain data (for a Prefect artifact or a log)."""
        return asdict(self)

    def summary(self) -> str:
        """One line for a log."""
        total = sum(self.buckets.values())
        per = ", ".join(f"{k}: {v}" for k, v in self.buckets.items())
        return (
            f"{self.series}: {self.chunks} chunks, {self.points} points, {total} buckets "
            f"({per}), {self.late_chunks} late, {self.seconds:.3f}s"
        )


def _project(states: np.ndarray, fields: tuple[str, ...]) -> np.ndarray:
    out = np.empty(states.size, dtype=state_dtype(fields))
    for name in out.dtype.names or ():
        out[name] = states[name]
    return out


def _read(series: TimeSeries, ids: list[int]) -> list[tuple[int, int, bool, bytes, bytes]]:
    """One snapshot: ``(chunk, version, had buckets, t, v)`` of every chunk of ``ids``."""
    b = series.base
    commands: list[tuple[Any, ...]] = []
    for c in ids:
        commands += [("HGET", b + "v", c), ("HEXISTS", b + "av", c),
                     ("GET", f"{b}r:{c}:t"), ("GET", f"{b}r:{c}:v")]  # fmt: skip
    replies = series.link.fetch([("MULTI",), *commands, ("EXEC",)])[-1]
    if replies is None:  # pragma: no cover - no WATCH is used
        raise BackendError("Redis aborted a transaction")
    out = []
    for k, c in enumerate(ids):
        version, had, t, v = replies[4 * k : 4 * k + 4]
        if version is not None and t is not None and v is not None:
            out.append((c, int(version), bool(had), t, v))
    return out


def _aggregate(
    series: TimeSeries, snapshot: list[Any], report: DownsampleReport, scratch: dict[str, Any]
) -> None:
    cfg = series.config
    if not snapshot or not cfg.levels:
        return
    # One copy of every point into two arrays, in time order (a chunk holds only its own
    # time span, so chunks in id order, each sorted, are sorted as a whole).
    sizes = [min(len(t), len(v)) // 8 for _c, _version, _had, t, v in snapshot]
    total = sum(sizes)
    if scratch.get("size", -1) < total:  # reused across batches: no page faults each time
        scratch.update(size=total, ts=np.empty(total, np.int64), values=np.empty(total))
    ts, values = scratch["ts"][:total], scratch["values"][:total]
    offset = 0
    for (_c, _version, _had, t, v), n in zip(snapshot, sizes, strict=True):
        chunk_ts = np.frombuffer(t, dtype=np.int64, count=n)
        chunk_values = np.frombuffer(v, dtype=np.float64, count=n)
        out_ts, out_values = ts[offset : offset + n], values[offset : offset + n]
        if n > 1 and bool((chunk_ts[1:] < chunk_ts[:-1]).any()):
            order = np.argsort(chunk_ts, kind="stable")  # ties keep their arrival order
            np.take(chunk_ts, order, out=out_ts, mode="clip")
            np.take(chunk_values, order, out=out_values, mode="clip")
            report.sorted_chunks += 1
        else:
            out_ts[:] = chunk_ts
            out_values[:] = chunk_values
        offset += n
    finest = cfg.levels[0]
    derived = [lv for lv in cfg.levels if lv.interval_ns % finest.interval_ns == 0]
    union = tuple(dict.fromkeys(f for lv in derived for f in lv.fields))
    base_states = states_from_points(ts, values, finest.interval_ns, union, assume_sorted=True)
    per_level = []
    for lv in cfg.levels:
        if lv is finest:
            states = base_states
        elif lv in derived:
            states = merge_states(base_states, lv.interval_ns)
        else:
            states = states_from_points(ts, values, lv.interval_ns, lv.fields,
                                        assume_sorted=True)  # fmt: skip
        states = _project(states, lv.fields)
        edges = np.array([c * cfg.chunk_ns for c, *_ in snapshot[1:]], dtype=np.int64)
        cuts = np.searchsorted(states["bucket"], edges).tolist()
        bounds = list(zip([0, *cuts], [*cuts, states.size], strict=True))
        per_level.append((lv, states, bounds))
    args: list[Any] = [len(snapshot), len(cfg.levels), *(lv.label for lv in cfg.levels)]
    for k, (c, version, *_) in enumerate(snapshot):
        args += [c, version]
        for _lv, states, bounds in per_level:
            lo, hi = bounds[k]
            args.append(encode_states(states[lo:hi]) if hi > lo else b"")
    _written, cleared, flags = series.link.script(_LUA_WRITE, [series.base], args)
    # Count only what this call wrote: a chunk version written by another run (at once, or
    # an earlier attempt of a retried partition) is that run's, and counted by it.
    for k, ((_c, _version, had, *_), n, wrote) in enumerate(
        zip(snapshot, sizes, flags, strict=True)
    ):
        if not int(wrote):
            report.skipped_chunks += 1
            continue
        report.chunks += 1
        report.points += n
        report.late_chunks += had
        for lv, _states, bounds in per_level:
            lo, hi = bounds[k]
            report.buckets[lv.label] = report.buckets.get(lv.label, 0) + (hi - lo)
    report.retry_chunks += len(snapshot) - int(cleared)


def downsample_series(series: TimeSeries) -> DownsampleReport:
    """Run one incremental downsampling of ``series`` (see the module doc)."""
    started = time.perf_counter()
    report = DownsampleReport(series.name, buckets={lv.label: 0 for lv in series.config.levels})
    report.trimmed_chunks, report.trimmed_buckets = trim_series(series)
    dirty = sorted(int(c) for c in series.link.run("SMEMBERS", series.base + "d"))
    if not series.config.levels:  # nothing to compute: raw points only
        if dirty:
            series.link.run("SREM", series.base + "d", *dirty)
        report.seconds = time.perf_counter() - started
        return report
    batches = [dirty[i : i + BATCH_CHUNKS] for i in range(0, len(dirty), BATCH_CHUNKS)]
    if len(batches) == 1:
        _aggregate(series, _read(series, batches[0]), report, {})
    elif batches:
        scratch: dict[str, Any] = {}
        with ThreadPoolExecutor(1, thread_name_prefix="pm-downsample") as pool:
            pending = pool.submit(_read, series, batches[0])
            for k in range(len(batches)):
                snapshot = pending.result()
                if k + 1 < len(batches):
                    pending = pool.submit(_read, series, batches[k + 1])
                _aggregate(series, snapshot, report, scratch)
    if any(lv.retention_ns for lv in series.config.levels):  # buckets just written may
        chunks, blobs = trim_series(series)  # already be past their retention
        report.trimmed_chunks += chunks
        report.trimmed_buckets += blobs
    report.seconds = time.perf_counter() - started
    return report


def trim_series(series: TimeSeries) -> tuple[int, int]:
    """Drop raw chunks and bucket blobs past their retention; ``(chunks, blobs)`` dropped."""
    link, b, cfg = series.link, series.base, series.config
    raw = link.run("ZSCORE", b + "w", "wm")
    if raw is None:
        return 0, 0
    watermark = round(float(raw) * 1e9)

    def expired(index: str, retention_ns: int) -> list[int]:
        last = (watermark - retention_ns) // cfg.chunk_ns - 1  # chunks wholly older
        return [int(c) for c in link.run("ZRANGEBYSCORE", index, "-inf", last)]

    chunks = expired(b + "i", cfg.retention_ns)
    commands: list[tuple[Any, ...]] = []
    counted: list[int] = []  # replies of the ZREMs: what this call removed (not another run)
    if chunks:
        commands += [("DEL", *(f"{b}r:{c}:{p}" for c in chunks for p in "tv")),
                     ("HDEL", b + "v", *chunks), ("HDEL", b + "av", *chunks),
                     ("SREM", b + "d", *chunks), ("ZREM", b + "i", *chunks)]  # fmt: skip
        counted.append(len(commands) - 1)
    for lv in cfg.levels:
        if lv.retention_ns is None:
            continue
        gone = expired(f"{b}i:{lv.label}", lv.retention_ns)
        if gone:
            commands += [("DEL", *(f"{b}a:{lv.label}:{c}" for c in gone)),
                         ("ZREM", f"{b}i:{lv.label}", *gone)]  # fmt: skip
            counted.append(len(commands) - 1)
    replies = link.transaction(commands)
    removed = [int(replies[i]) for i in counted]
    if chunks:
        return removed[0], sum(removed[1:])
    return 0, sum(removed)
