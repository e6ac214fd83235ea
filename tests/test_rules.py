"""Migration rule conditions: parsed exactly as written, errors with positions."""

from __future__ import annotations

import math

import pytest

import prefect_memory as pm
from prefect_memory.plugins.base import Record
from prefect_memory.tiers.rules import RuleSyntaxError, field_value, parse_rule

NOW = 1_000_000.0


def rec(**kw: object) -> Record:
    value = kw.pop("value", b"x" * 10)
    base = {"created_at": NOW - 100, "updated_at": NOW - 100, "last_access": NOW - 10, **kw}
    return Record(value, **base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "record", "expected"),
    [
        ("accessCount < 5 AND age > 3600", rec(created_at=NOW - 3601, access_count=4), True),
        ("accessCount < 5 AND age > 3600", rec(created_at=NOW - 3601, access_count=5), False),
        ("accessCount < 5 AND age > 3600", rec(created_at=NOW - 3600, access_count=0), False),
        ("lastAccess > 86400", rec(last_access=NOW - 86401), True),
        ("lastAccess > 86400", rec(last_access=NOW - 86400), False),
        ("idle >= 1d", rec(last_access=NOW - 86400), True),
        ("size > 1KB", rec(value=b"x" * 1025), True),
        ("size > 1KB", rec(value=b"x" * 1024), False),
        ("ttlLeft < 60", rec(expires_at=NOW + 59), True),
        ("ttlLeft < 60", rec(), False),
        ("tag == 'pinned'", rec(tags=("pinned",)), True),
        ("tag != 'pinned'", rec(tags=("pinned",)), False),
        ('NOT tag == "pinned" AND age > 1m', rec(), True),
        ("age > 1h OR accessCount = 0", rec(), True),
        ("age > 1h OR (accessCount = 0 AND size > 1MB)", rec(), False),
        ("ACCESSCOUNT < 1 and AGE > 50s", rec(), True),
        ("age > 99.5 AND age < 100.5", rec(), True),
        ("age > 1500ms", rec(), True),
    ],
)
def test_rules_evaluate_exactly_as_written(text: str, record: Record, expected: bool) -> None:
    assert parse_rule(text).matches(record, NOW) is expected


def test_precedence_and_binds_tighter_than_or() -> None:
    rule = parse_rule("age > 1000 AND accessCount > 5 OR size > 5")
    assert rule.matches(rec(), NOW)  # (F and F) or T
    rule = parse_rule("age > 1000 AND (accessCount > 5 OR size > 5)")
    assert not rule.matches(rec(), NOW)


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("accessCount < 5 AND", 19, "unexpected end"),
        ("age >> 5", 5, "expected a number"),
        ("agee > 5", 0, "unknown field 'agee'"),
        ("(age > 5", 8, "expected ')'"),
        ("age > 5 extra", 8, "expected AND, OR"),
        ("size > 5parsecs", 7, "unit 'parsecs'"),
        ("accessCount > 5h", 14, "unit 'h'"),
        ("tag > 'x'", 6, "tag takes"),
        ("age > 'x'", 6, "compares with a number"),
        ("age ; 3", 4, "unexpected ';'"),
        ("", 0, "empty condition"),
    ],
)
def test_bad_rules_name_the_position(text: str, position: int, fragment: str) -> None:
    with pytest.raises(RuleSyntaxError) as info:
        parse_rule(text)
    assert info.value.position == position
    assert fragment in str(info.value)
    assert isinstance(info.value, pm.ConfigError) and isinstance(info.value, ValueError)


def test_no_eval_of_python() -> None:
    with pytest.raises(RuleSyntaxError):
        parse_rule("__import__('os').system('true')")


def test_field_values() -> None:
    assert field_value("ttlLeft", rec(), NOW) == math.inf
    assert field_value("age", rec(), NOW) == 100
    assert parse_rule("idle > 1 OR lastAccess > 2").fields == ["idle", "lastAccess"]
