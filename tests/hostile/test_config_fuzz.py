"""Hostile and wrong configs and rule texts: only ConfigError escapes, with paths, in bounds.

Regression tests for issue 15 items 7 and 8, then a hypothesis fuzz of ``parse_rule``,
``pm.from_config`` (dict and file) and ``blocks_from_config``. The fuzz runs in a child
process (multiprocessing spawn), so a crash of the interpreter would show as a failure,
not as a dead pytest; the child also reports its peak memory.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import resource
import tempfile
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory.config import MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH
from prefect_memory.tiers.rules import MAX_RULE_DEPTH, MAX_RULE_LENGTH, RuleSyntaxError, parse_rule

#: Connections that never answer: opening a store must not need its server.
CONNECTIONS = {"redis": "redis://127.0.0.1:1/0", "mongodb": "mongodb://127.0.0.1:1/fuzz"}
TIERS: dict[str, Any] = {
    "backend": "hybrid",
    "tiers": [
        {"name": "hot", "backend": "memory", "ttl": 3600, "maxSize": "100MB",
         "patterns": ["session:*"]},
        {"name": "cold", "backend": "sqlite", "location": "cold.db", "maxEntries": 10},
    ],
    "migration": {"rules": [{"from": "hot", "to": "cold", "condition": "age > 3600"}]},
}  # fmt: skip
HYBRID: dict[str, Any] = {
    "backend": "hybrid", "primary": {"type": "memory"},
    "secondary": {"type": "json", "location": "backup.json"},
    "sync": {"enabled": True, "interval": 30000, "strategy": "write-through"},
}  # fmt: skip


def problems(config: Any, **kw: Any) -> str:
    with pytest.raises(pm.ConfigError) as info:
        pm.from_config(config, **kw)
    return str(info.value)


# -- item 7: wrong configs are ConfigErrors naming their paths ----------------------------------
@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"sync": {"interval": math.nan}}, "memory.sync.interval"),
        ({"sync": {"interval": 1e308}}, "memory.sync.interval"),
        ({"sync": []}, "memory.sync: must be an object"),
        ({"ttl": math.inf}, "memory.ttl"),
        ({"ttl": "9" * 400 + "d"}, "memory.ttl"),
        ({"journal": 5}, "memory.journal"),
        ({"namespace": 5}, "memory.namespace"),
        ({"refresh": "no"}, "memory.refresh: must be true or false"),
        ({"primary": {"type": "memory", "options": [1]}}, "memory.primary.options"),
        ({"primary": {"type": "memory", "options": {"nope": 1}}}, "memory.primary.options"),
        ({"primary": {"type": "memory", "ttl": 5}}, "memory.primary.ttl: not a setting of a part"),
    ],
)
def test_wrong_hybrid_values_name_their_path(
    change: dict[str, Any], fragment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert fragment in problems({**HYBRID, **change})


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"maxEntries": True}, "memory.tiers[0].maxEntries"),
        ({"maxSize": math.nan}, "memory.tiers[0].maxSize"),
        ({"maxSize": "9" * 400 + "TB"}, "memory.tiers[0].maxSize"),
        ({"storage_options": "x"}, "memory.tiers[0].storage_options"),
        ({"backend": "hybrid"}, "memory.tiers[0]: a tier is one store"),
    ],
)
def test_wrong_tier_values_name_their_path(
    change: dict[str, Any], fragment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = json.loads(json.dumps(TIERS))
    config["tiers"][0].update(change)
    assert fragment in problems(config)


@pytest.mark.parametrize("migration", [[], "x", {"rules": "abc"}, {"rules": [], "every": 5}])
def test_a_wrong_migration_section_is_refused(migration: Any) -> None:
    config = {**json.loads(json.dumps(TIERS)), "migration": migration}
    assert "memory.migration" in problems(config)


def test_every_rule_problem_is_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = json.loads(json.dumps(TIERS))
    config["migration"]["rules"] = [
        {"from": "hot", "to": "lukewarm", "condition": "age > 1"},
        {"from": "hot", "to": "cold", "condition": "agee > 1 AND size > 5h"},
        {"from": "hot", "to": "cold", "condition": "(" * 500 + "age > 1" + ")" * 500},
        {"from": "hot", "condition": "age > " + "9" * 400},
    ]
    message = problems(config)
    for fragment in [
        "memory.migration.rules[0].to: unknown tier 'lukewarm'",
        "memory.migration.rules[1].condition: unknown field 'agee'",
        "unit 'h' does not fit size (allowed: b, kb, mb, gb, tb) at position 20",
        "memory.migration.rules[2].condition: nested deeper than",
        "memory.migration.rules[3]: missing 'to'",
        "memory.migration.rules[3].condition: number too large",
    ]:
        assert fragment in message, fragment


def test_a_directory_is_a_config_error_naming_it(tmp_path: Path) -> None:
    message = problems(tmp_path)
    assert str(tmp_path) in message and "is a directory" in message


def test_special_files_and_big_files_are_refused(tmp_path: Path) -> None:
    assert "not a regular file" in problems("/dev/zero")  # would never end
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"memory": {"backend": "memory", "pad": "x" * MAX_CONFIG_BYTES}}))
    assert "more than" in problems(big)


def test_deep_documents_are_refused_in_file_and_dict(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('{"memory": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert "nested deeper than" in problems(deep)
    nested: dict[str, Any] = {}
    for _ in range(MAX_CONFIG_DEPTH + 5):
        nested = {"a": nested}
    assert "nested deeper than" in problems({"backend": "memory", "options": nested})
    cyclic: dict[str, Any] = {"backend": "memory"}
    cyclic["options"] = cyclic
    assert "nested deeper than" in problems(cyclic)


def test_json_constants_and_huge_numbers_in_files(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    for text in ('{"backend": "memory", "ttl": NaN}', '{"backend": "memory", "ttl": 1e999}'):
        path.write_text(text)
        assert "is not valid JSON" in problems(path)


def test_rule_limits() -> None:
    with pytest.raises(RuleSyntaxError, match="nested deeper than") as info:
        parse_rule("NOT " * (MAX_RULE_DEPTH + 1) + "age > 1")
    assert info.value.position == 4 * MAX_RULE_DEPTH
    parse_rule("NOT " * MAX_RULE_DEPTH + "age > 1")
    with pytest.raises(RuleSyntaxError, match="at most 4096 characters"):
        parse_rule("age > 1 " + " " * MAX_RULE_LENGTH)
    with pytest.raises(RuleSyntaxError, match="number too large"):
        parse_rule("age > " + "9" * 400)  # was inf
    with pytest.raises(RuleSyntaxError, match="a tag is a non-empty UTF-8"):
        parse_rule("tag == '\ud800'")
    with pytest.raises(RuleSyntaxError, match="unexpected '٣'"):
        parse_rule("age > ٣")


# -- item 8: every key is applied or refused -------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("persist", True, "appendonly"),
        ("indexes", ["userId"], "cannot be indexed"),
        ("cache", {"ttl": 300, "tags": True}, "use 'tiers' with a 'ttl' per tier"),
        ("versioning", True, "put the version in the key"),
        ("validators", [], "pass hooks=[...]"),
        ("hooks", {}, "pass hooks=[...]"),
        ("broadcast", True, "SharedMemory"),
        ("tags", True, "tags are always available"),
        ("format", "csv", "only 'parquet'"),
        ("partitioning", "date", 'add "format": "parquet"'),
        ("consistency", "strong", "only Redis stores take 'consistency'"),
    ],
)
def test_keys_that_would_be_ignored_are_refused(key: str, value: Any, fragment: str) -> None:
    message = problems({"namespaces": {"a": {"backend": "memory", key: value}}})
    assert f"memory.namespaces.a.{key}: " in message and fragment in message


def test_the_parquet_shape_opens_the_archive(tmp_path: Path) -> None:
    spaces = pm.from_config(
        {"datasets": {"training": {"backend": "file", "location": str(tmp_path / "t"),
                                   "format": "parquet", "partitioning": "date"}}}
    )  # fmt: skip
    training = spaces["training"]
    assert training.backend.scheme == "parquet"
    training.set("row:1", {"x": 1})
    assert list((tmp_path / "t").rglob("date=*/*.parquet"))
    message = problems({"backend": "redis", "format": "parquet"})
    assert "memory.format: a redis store has no Parquet format" in message


def test_defaults_of_a_namespaces_config_are_applied() -> None:
    spaces = pm.from_config(
        {"backend": "memory", "ttl": 60, "namespaces": {"a": {}, "b": {"ttl": 5}}}
    )
    assert (spaces["a"].backend.scheme, spaces["a"].ttl, spaces["b"].ttl) == ("memory", 60, 5)


def test_analytics_sections_are_checked_at_load() -> None:
    streams = {"events": {"type": "redis-stream", "maxLength": True, "trimStrategy": "SOME"}}
    processing = {"windows": {"w": {"size": "nope"}}, "extra": 1}
    message = problems({"streams": streams, "processing": processing})
    for fragment in ["memory.streams.events.maxLength", "memory.streams.events.trimStrategy",
                     "memory.processing.extra", "memory.processing.windows.w"]:  # fmt: skip
        assert fragment in message, fragment


# -- fuzz --------------------------------------------------------------------------------
def _fuzz(examples: int) -> dict[str, Any]:
    """Run in a child: fuzz rules and configs, return the escapes and the peak memory."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from prefect_memory.blocks import blocks_from_config

    escapes: list[str] = []
    os.chdir(tempfile.mkdtemp())
    hostile_numbers = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1, 0, 2**80,
                                       True, 10**400, 0.5, "1e5", "1.5h", "unlimited"])  # fmt: skip
    hostile_text = st.one_of(
        st.text(max_size=40), st.sampled_from(["\x00", "\ud800", "٣", "x" * 70_000, "hybrid",
                                               "parquet", "s3", "redis", "../..", "."]),
    )  # fmt: skip
    leaf = st.one_of(hostile_numbers, hostile_text, st.none(), st.integers(), st.floats())

    def deep(n: int) -> Any:
        node: Any = "x"
        for i in range(n):
            node = [node] if i % 2 else {"k": node}
        return node

    values = st.recursive(
        leaf,
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(hostile_text, kids, max_size=3),
        max_leaves=8,
    ) | st.integers(50, 3000).map(deep)  # fmt: skip

    def paths(node: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        out = [here]
        if len(here) > 6:  # mutations stay near the real shape
            return out
        if isinstance(node, dict):
            for k, v in node.items():
                out += paths(v, (*here, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                out += paths(v, (*here, i))
        return out

    def mutate(base: Any, data: Any) -> Any:
        config = json.loads(json.dumps(base))
        for _ in range(data.draw(st.integers(1, 3))):
            where = data.draw(st.sampled_from(paths(config)))
            if not where:
                continue
            parent = config
            for step in where[:-1]:
                parent = parent[step]
            if data.draw(st.booleans()) and isinstance(parent, dict):
                parent[data.draw(hostile_text)] = data.draw(values)
            else:
                parent[where[-1]] = data.draw(values)
        return config

    bases = [TIERS, HYBRID, {"memory": {"namespaces": {"a": {"backend": "memory", "ttl": 5}},
             "streams": {"e": {"type": "redis-stream"}, "t": {"type": "time-series",
             "downsampling": [{"interval": 60}]}}, "processing": {"windows": {"w": {"size": 60}}}}},
             {"datasets": {"d": {"backend": "file", "location": "d", "format": "parquet"}},
              "compute": {"cache": {"p": {"ttl": 1}}}}]  # fmt: skip

    def check(call: Any) -> None:
        try:
            call()
        except pm.ConfigError:
            pass
        except BaseException as err:  # what the fuzz is looking for
            escapes.append(f"{type(err).__name__}: {str(err)[:200]}")

    quick = settings(max_examples=examples, deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))  # fmt: skip

    @quick
    @given(st.one_of(
        st.text(max_size=200),
        st.lists(st.sampled_from(["(", ")", "NOT ", " AND ", " OR ", "age", " > ", "9" * 30,
                                  "'\x00'", "tag == 'x'", "size >= 1TB", "\ud800", "1e5", " "]),
                 max_size=300).map("".join),
        st.integers(0, 5000).map(lambda n: "(" * n + "age > 1" + ")" * n),
        st.integers(0, 5000).map(lambda n: "NOT " * n + "age > 1"),
    ))  # fmt: skip
    def rules(text: str) -> None:
        check(lambda: parse_rule(text))

    @quick
    @given(st.data())
    def configs(data: Any) -> None:
        config = mutate(data.draw(st.sampled_from(bases)), data)
        check(lambda: pm.from_config(config, connections=CONNECTIONS))
        check(lambda: blocks_from_config(config, connections=CONNECTIONS))
        path = Path("fuzz.json")
        try:
            path.write_text(json.dumps(config), encoding="utf-8", errors="surrogatepass")
        except (ValueError, RecursionError):  # too deep for json.dumps: nothing to write
            return
        check(lambda: pm.from_config(path, connections=CONNECTIONS))

    rules()
    configs()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"escapes": sorted(set(escapes)), "peak_mib": peak_kib / 1024}


def _child(examples: int, queue: Any) -> None:
    try:
        queue.put(_fuzz(examples))
    except BaseException as err:  # the harness itself failed: report, do not hang
        queue.put({"escapes": [f"fuzz harness: {type(err).__name__}: {err}"], "peak_mib": 0})


def test_fuzz_rules_and_configs_only_raise_config_errors() -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(int(os.environ.get("PM_FUZZ_EXAMPLES", 150)), queue))
    child.start()
    result = queue.get(timeout=300)
    child.join(timeout=60)
    assert child.exitcode == 0, f"the fuzz child died (exit code {child.exitcode})"
    assert result["escapes"] == []
    assert result["peak_mib"] < 1024, result  # a bounded reader, not a timing
