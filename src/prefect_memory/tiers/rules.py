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

Limits, so that any text parses in bounded time and memory: at most
:data:`MAX_RULE_LENGTH` characters, nesting (parentheses and ``NOT``) at most
:data:`MAX_RULE_DEPTH` deep, numbers (after their unit) at most :data:`MAX_RULE_NUMBER`,
tags non-empty UTF-8 without NUL. Past them, :class:`RuleSyntaxError` gives the position.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, NoReturn, Union

from ..errors import ConfigError
from ..plugins.base import EntryColumns, Record
from ..units import DURATION_UNITS, SIZE_UNITS


class RuleSyntaxError(ConfigError):
    """A rule condition does not parse; the message gives the position of each problem.

    Attributes:
        text: The condition as written.
        position: Where the first problem is (0-based character offset).
        problems: Every ``(position, message)`` found (a syntax error ends the search).
    """

    def __init__(
        self,
        message: str,
        text: str,
        position: int,
        *,
        problems: Sequence[tuple[int, str]] = (),
    ) -> None:
        found = list(problems) or [(position, message)]
        lines = [f"{msg} at position {pos}" for pos, msg in found]
        super().__init__("; ".join(lines) + f" in {_excerpt(text, found[0][0])}")
        self.text = text
        self.position = found[0][0]
        self.problems = found


def _excerpt(text: str, position: int) -> str:
    """``repr`` of ``text``, or of a window around ``position`` when it is long."""
    if len(text) <= 120:
        return repr(text)
    start = max(0, position - 40)
    stop = min(len(text), start + 80)
    return f"{text[start:stop]!r} (characters {start}-{stop} of {len(text)})"


FIELDS = ("accessCount", "age", "lastAccess", "idle", "size", "ttlLeft", "tag")
_FIELD_LOOKUP = {name.lower(): name for name in FIELDS}
#: Longest condition accepted, in characters.
MAX_RULE_LENGTH = 4096
#: Deepest nesting of parentheses and ``NOT`` accepted.
MAX_RULE_DEPTH = 32
#: Largest number accepted (after its unit): every integer up to it is exact as a float,
#: so comparisons pushed down to Redis, SQL or MongoDB mean the same as in Python.
MAX_RULE_NUMBER = float(2**53)
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
        (?P<num>[0-9]+(?:\.[0-9]+)?)(?P<unit>[A-Za-z]+)?
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

    def select(self, columns: EntryColumns, now: float) -> list[bool]:
        if self.field == "tag":
            tag = self.value
            if self.op in ("==", "="):
                return [tag in tags for tags in columns.tags]
            return [tag not in tags for tags in columns.tags]
        return list(map(_OPS[self.op], field_column(self.field, columns, now), repeat(self.value)))


@dataclass(frozen=True)
class Not:
    """``NOT expr``."""

    operand: Node

    def evaluate(self, record: Record, now: float) -> bool:
        return not self.operand.evaluate(record, now)

    def select(self, columns: EntryColumns, now: float) -> list[bool]:
        return [not hit for hit in self.operand.select(columns, now)]


@dataclass(frozen=True)
class BoolOp:
    """``a AND b AND ...`` or ``a OR b OR ...``."""

    op: str
    operands: tuple[Node, ...]

    def evaluate(self, record: Record, now: float) -> bool:
        combine = all if self.op == "AND" else any
        return combine(o.evaluate(record, now) for o in self.operands)

    def select(self, columns: EntryColumns, now: float) -> list[bool]:
        combine = all if self.op == "AND" else any
        masks = [o.select(columns, now) for o in self.operands]
        return list(map(combine, zip(*masks, strict=True)))


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


def field_column(name: str, columns: EntryColumns, now: float) -> list[float]:
    """The numeric values of a rule field for every entry of ``columns`` at ``now``.

    Row for row the same numbers as :func:`field_value` gives for each record.
    """
    if name == "accessCount":
        return list(map(float, columns.access_count))
    if name == "age":
        return [now - t for t in columns.created_at]
    if name in ("lastAccess", "idle"):
        return [now - t for t in columns.last_access]
    if name == "size":
        return list(map(float, columns.sizes))
    if name == "ttlLeft":
        return [math.inf if t is None else t - now for t in columns.expires_at]
    raise KeyError(name)


@dataclass(frozen=True)
class Rule:
    """A parsed condition: ``matches(record, now)``; ``text`` is what the user wrote."""

    text: str
    root: Node

    def matches(self, record: Record, now: float) -> bool:
        """Tell whether ``record`` satisfies the condition at time ``now``."""
        return self.root.evaluate(record, now)

    def select(self, columns: EntryColumns, now: float) -> list[bool]:
        """For each entry of ``columns``, whether it satisfies the condition at ``now``.

        Evaluated a column at a time (no record is made); row ``i`` says what
        :meth:`matches` says of ``columns.record(i)``.

        Example:
            >>> from prefect_memory.plugins.base import EntryColumns
            >>> cols = EntryColumns.from_records({
            ...     "a": Record(b"", 0.0, 0.0, 0.0, access_count=1),
            ...     "b": Record(b"", 0.0, 0.0, 0.0, access_count=7, tags=("pin",))})
            >>> parse_rule("accessCount < 5 OR NOT tag == 'pin'").select(cols, now=10.0)
            [True, False]
        """
        return self.root.select(columns, now)

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


class _Stop(Exception):
    """A syntax error: parsing cannot go on (the problem is already recorded)."""


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.problems: list[tuple[int, str]] = []
        self.tokens: list[tuple[str, str, str | None, int]] = []
        self.i = 0
        self.depth = 0

    def tokenize(self) -> None:
        """Split the text into tokens (one pass: linear in its length)."""
        text = self.text
        end = len(text.rstrip())
        pos = 0
        while pos < end:
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos or m.lastgroup is None:
                start = pos + (len(text[pos:end]) - len(text[pos:end].lstrip()))
                self.fail(start, f"unexpected {text[start]!r}")
            kind = m.lastgroup if m.lastgroup != "unit" else "num"
            start = m.start(kind)
            self.tokens.append((kind, m.group(kind), m.group("unit"), start))  # type: ignore[arg-type]
            pos = m.end()

    def note(self, position: int, message: str) -> None:
        """Record a problem and go on parsing (the rule is refused at the end)."""
        self.problems.append((position, message))

    def fail(self, position: int, message: str) -> NoReturn:
        """Record a syntax error and stop."""
        self.note(position, message)
        raise _Stop

    def peek(self) -> tuple[str, str, str | None, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def expected(self, expected: str) -> NoReturn:
        tok = self.peek()
        if tok is None:
            self.fail(len(self.text), f"unexpected end, expected {expected}")
        self.fail(tok[3], f"unexpected {tok[1]!r}, expected {expected}")

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok is not None and tok[0] == "word" and tok[1].upper() == word:
            self.i += 1
            return True
        return False

    def parse(self) -> Node:
        if not self.tokens:
            self.fail(0, "empty condition")
        node = self.parse_or()
        if self.peek() is not None:
            self.expected("AND, OR or the end")
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

    def nest(self) -> None:
        """Enter a NOT or a parenthesis: the depth is bounded, so is the recursion."""
        self.depth += 1
        if self.depth > MAX_RULE_DEPTH:
            self.fail(
                self.tokens[self.i - 1][3],
                f"nested deeper than {MAX_RULE_DEPTH} levels (parentheses and NOT)",
            )

    def parse_not(self) -> Node:
        if self.keyword("NOT"):
            self.nest()
            node = Not(self.parse_not())
            self.depth -= 1
            return node
        return self.parse_atom()

    def parse_atom(self) -> Node:
        tok = self.peek()
        if tok is not None and tok[0] == "paren" and tok[1] == "(":
            self.i += 1
            self.nest()
            node = self.parse_or()
            tok = self.peek()
            if tok is None or tok[1] != ")":
                self.expected("')'")
            self.i += 1
            self.depth -= 1
            return node
        if tok is None or tok[0] != "word" or tok[1].upper() in ("AND", "OR", "NOT"):
            self.expected(f"a field ({', '.join(FIELDS)}) or '('")
        field = _FIELD_LOOKUP.get(tok[1].lower())
        if field is None:
            self.note(tok[3], f"unknown field {tok[1]!r} (known: {', '.join(FIELDS)})")
        self.i += 1
        op_tok = self.peek()
        if op_tok is None or op_tok[0] != "op":
            self.expected("a comparison (<, <=, >, >=, ==, !=)")
        self.i += 1
        value_tok = self.peek()
        if value_tok is None or value_tok[0] not in ("num", "str"):
            self.expected("a number or a quoted string")
        self.i += 1
        if field is None:
            return Compare("age", op_tok[1], 0.0)  # refused at the end; keeps parsing
        return Compare(field, op_tok[1], self.value(field, op_tok[1], value_tok))

    def value(self, field: str, op: str, tok: tuple[str, str, str | None, int]) -> float | str:
        kind, raw, unit, pos = tok
        if field == "tag":
            if kind != "str" or op not in ("==", "=", "!="):
                self.note(pos, "tag takes == or != and a quoted tag")
                return ""
            tag = raw[1:-1]
            if not tag or "\x00" in tag or not _encodes(tag):
                self.note(pos, "a tag is a non-empty UTF-8 string without NUL")
            return tag
        if kind != "num":
            self.note(pos, f"{field} compares with a number")
            return 0.0
        number = float(raw)
        if unit is not None:
            table = _SIZE if field == "size" else _DURATION if field != "accessCount" else {}
            factor = table.get(unit.lower())
            if factor is None:
                allowed = ", ".join(table) or "none"
                self.note(pos, f"unit {unit!r} does not fit {field} (allowed: {allowed})")
                return 0.0
            number *= factor
        if not number <= MAX_RULE_NUMBER:  # also inf from a long run of digits
            self.note(pos, f"number too large (at most {MAX_RULE_NUMBER:.0f} after its unit)")
        return number


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_rule(text: str) -> Rule:
    """Parse a condition such as ``"accessCount < 5 AND age > 3600"``.

    Raises:
        RuleSyntaxError: The condition is malformed or past a limit (a
            :class:`~prefect_memory.ConfigError`); the message names each problem and its
            position (a syntax error ends the search).
    """
    if not isinstance(text, str):
        raise ConfigError(f"a rule condition must be a string, got {type(text).__name__}")
    if len(text) > MAX_RULE_LENGTH:
        raise RuleSyntaxError(
            f"a condition is at most {MAX_RULE_LENGTH} characters, got {len(text)}",
            text,
            MAX_RULE_LENGTH,
        )
    parser = _Parser(text)
    try:
        parser.tokenize()
        root = parser.parse()
    except _Stop:
        root = None
    if parser.problems:
        position, message = parser.problems[0]
        raise RuleSyntaxError(message, text, position, problems=parser.problems)
    assert root is not None
    return Rule(text, root)
