"""Migration rule conditions: a small expression language, parsed (never ``eval``-ed).

Grammar (keywords case-insensitive)::

    expr    := or
    or      := and ("OR" and)*
    and     := not ("AND" not)*
    not     := "NOT" not | atom
    atom    := "(" expr ")" | compare
    compare := FIELD OP value
    OP      := "<" | "<=" | ">" | ">=" | "==" | "=" | "!="
    value   := NUMBER [UNIT] | STRING

Fields (all about one entry, times in seconds):

==============  ============================================================
``accessCount`` reads counted so far
``age``         seconds since creation
``lastAccess``  seconds since the last access (the tutorial's meaning)
``idle``        same as ``lastAccess``
``size``        stored bytes of the value
``ttlLeft``     seconds until expiry (infinite when the entry never expires)
``tag``         ``tag == "x"``: the entry carries tag x; ``!=``: it does not
==============  ============================================================

Units: ``ms s m h d w`` for durations, ``B KB MB GB TB`` (powers of 1024) for sizes.

Example:
    >>> from prefect_memory.plugins.base import Record
    >>> rule = parse_rule("accessCount < 5 AND age > 3600")
    >>> rule.matches(Record(b"x", created_at=0, updated_at=0, last_access=0), now=7200)
    True
    >>> rule.matches(Record(b"x", created_at=0, updated_at=0, last_access=0, access_count=9),
    ...              now=7200)
    False
    >>> parse_rule("lastAccess > 1d OR (size >= 100MB AND NOT tag == 'pinned')").fields
    ['lastAccess', 'size', 'tag']
    >>> parse_rule("age >> 5")
    Traceback (most recent call last):
    ...
    prefect_memory.tiers.rules.RuleSyntaxError: unexpected '>', expected a number or a ...
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from ..errors import ConfigError
from ..plugins.base import Record
from ..units import DURATION_UNITS, SIZE_UNITS


class RuleSyntaxError(ConfigError):
    """A rule condition does not parse; the message gives the position of the problem."""

    def __init__(self, message: str, text: str, position: int) -> None:
        super().__init__(f"{message} at position {position} in {text!r}")
        self.text = text
        self.position = position


FIELDS = ("accessCount", "age", "lastAccess", "idle", "size", "ttlLeft", "tag")
_FIELD_LOOKUP = {name.lower(): name for name in FIELDS}
_DURATION = DURATION_UNITS
_SIZE = SIZE_UNITS
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "=": operator.eq,
    "!=": operator.ne,
}
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>\d+(?:\.\d+)?)(?P<unit>[A-Za-z]+)?
      | (?P<str>"[^"]*"|'[^']*')
      | (?P<op><=|>=|==|!=|<|>|=)
      | (?P<paren>[()])
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Compare:
    """``field op value``."""

    field: str
    op: str
    value: float | str

    def evaluate(self, record: Record, now: float) -> bool:
        if self.field == "tag":
            has = self.value in record.tags
            return has if self.op in ("==", "=") else not has
        return _OPS[self.op](field_value(self.field, record, now), self.value)


@dataclass(frozen=True)
class Not:
    """``NOT expr``."""

    operand: Node

    def evaluate(self, record: Record, now: float) -> bool:
        return not self.operand.evaluate(record, now)


@dataclass(frozen=True)
class BoolOp:
    """``a AND b AND ...`` or ``a OR b OR ...``."""

    op: str
    operands: tuple[Node, ...]

    def evaluate(self, record: Record, now: float) -> bool:
        combine = all if self.op == "AND" else any
        return combine(o.evaluate(record, now) for o in self.operands)


Node = Union[Compare, Not, BoolOp]  # noqa: UP007


def field_value(name: str, record: Record, now: float) -> float:
    """The numeric value of a rule field for ``record`` at ``now``."""
    if name == "accessCount":
        return float(record.access_count)
    if name == "age":
        return now - record.created_at
    if name in ("lastAccess", "idle"):
        return now - record.last_access
    if name == "size":
        return float(record.size)
    if name == "ttlLeft":
        return math.inf if record.expires_at is None else record.expires_at - now
    raise KeyError(name)


@dataclass(frozen=True)
class Rule:
    """A parsed condition: ``matches(record, now)``; ``text`` is what the user wrote."""

    text: str
    root: Node

    def matches(self, record: Record, now: float) -> bool:
        """Tell whether ``record`` satisfies the condition at time ``now``."""
        return self.root.evaluate(record, now)

    @property
    def fields(self) -> list[str]:
        """The fields the condition reads, in order of first use."""
        seen: list[str] = []

        def walk(node: Node) -> None:
            if isinstance(node, Compare):
                if node.field not in seen:
                    seen.append(node.field)
            elif isinstance(node, Not):
                walk(node.operand)
            else:
                for operand in node.operands:
                    walk(operand)

        walk(self.root)
        return seen


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, str | None, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                start = pos + (len(text[pos:]) - len(text[pos:].lstrip()))
                raise RuleSyntaxError(f"unexpected {text[start]!r}", text, start)
            kind = m.lastgroup if m.lastgroup != "unit" else "num"
            start = m.start(kind)
            self.tokens.append((kind, m.group(kind), m.group("unit"), start))  # type: ignore[arg-type]
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str, str | None, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def error(self, expected: str) -> RuleSyntaxError:
        tok = self.peek()
        if tok is None:
            message = f"unexpected end, expected {expected}"
            return RuleSyntaxError(message, self.text, len(self.text))
        return RuleSyntaxError(f"unexpected {tok[1]!r}, expected {expected}", self.text, tok[3])

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok is not None and tok[0] == "word" and tok[1].upper() == word:
            self.i += 1
            return True
        return False

    def parse(self) -> Node:
        if not self.tokens:
            raise RuleSyntaxError("empty condition", self.text, 0)
        node = self.parse_or()
        if self.peek() is not None:
            raise self.error("AND, OR or the end")
        return node

    def parse_or(self) -> Node:
        operands = [self.parse_and()]
        while self.keyword("OR"):
            operands.append(self.parse_and())
        return operands[0] if len(operands) == 1 else BoolOp("OR", tuple(operands))

    def parse_and(self) -> Node:
        operands = [self.parse_not()]
        while self.keyword("AND"):
            operands.append(self.parse_not())
        return operands[0] if len(operands) == 1 else BoolOp("AND", tuple(operands))

    def parse_not(self) -> Node:
        if self.keyword("NOT"):
            return Not(self.parse_not())
        return self.parse_atom()

    def parse_atom(self) -> Node:
        tok = self.peek()
        if tok is not None and tok[0] == "paren" and tok[1] == "(":
            self.i += 1
            node = self.parse_or()
            tok = self.peek()
            if tok is None or tok[1] != ")":
                raise self.error("')'")
            self.i += 1
            return node
        if tok is None or tok[0] != "word" or tok[1].upper() in ("AND", "OR", "NOT"):
            raise self.error(f"a field ({', '.join(FIELDS)}) or '('")
        field = _FIELD_LOOKUP.get(tok[1].lower())
        if field is None:
            raise RuleSyntaxError(
                f"unknown field {tok[1]!r} (known: {', '.join(FIELDS)})", self.text, tok[3]
            )
        self.i += 1
        op_tok = self.peek()
        if op_tok is None or op_tok[0] != "op":
            raise self.error("a comparison (<, <=, >, >=, ==, !=)")
        self.i += 1
        value_tok = self.peek()
        if value_tok is None or value_tok[0] not in ("num", "str"):
            raise self.error("a number or a quoted string")
        self.i += 1
        return Compare(field, op_tok[1], self.value(field, op_tok[1], value_tok))

    def value(self, field: str, op: str, tok: tuple[str, str, str | None, int]) -> float | str:
        kind, raw, unit, pos = tok
        if field == "tag":
            if kind != "str" or op not in ("==", "=", "!="):
                raise RuleSyntaxError("tag takes == or != and a quoted tag", self.text, pos)
            return raw[1:-1]
        if kind != "num":
            raise RuleSyntaxError(f"{field} compares with a number", self.text, pos)
        number = float(raw)
        if unit is None:
            return number
        table = _SIZE if field == "size" else _DURATION if field != "accessCount" else {}
        factor = table.get(unit.lower())
        if factor is None:
            allowed = ", ".join(table) or "none"
            raise RuleSyntaxError(
                f"unit {unit!r} does not fit {field} (allowed: {allowed})", self.text, pos
            )
        return number * factor


def parse_rule(text: str) -> Rule:
    """Parse a condition such as ``"accessCount < 5 AND age > 3600"``.

    Raises:
        RuleSyntaxError: The condition is malformed (a :class:`~prefect_memory.ConfigError`);
            the message names the problem and its position.
    """
    if not isinstance(text, str):
        raise ConfigError(f"a rule condition must be a string, got {type(text).__name__}")
    return Rule(text, _Parser(text).parse())
