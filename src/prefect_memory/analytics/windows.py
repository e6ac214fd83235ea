"""Windows over time: tumbling (``slide == size``) and sliding (``slide < size``).

A window of ``size`` seconds moving by ``slide`` seconds is built from *panes* of
``gcd(size, slide)`` seconds aligned on the epoch: a counter adds to the pane of each
event, and a window's value is the sum of the ``size / pane`` panes it covers. The window
*at* a time ``t`` is the latest one started at or before ``t`` that contains it, i.e.
the one ending with the slide step holding ``t``: ``[end - size, end)`` with
``end = floor(t / slide) * slide + slide``.

Names follow the tutorial's ``metric:<type>:1m`` keys: :func:`duration_label` writes a
duration with the largest unit dividing it.

Example:
    >>> w = Window(size=60, slide=10, name="realtime")
    >>> w.pane, w.panes_per_window, w.label
    (10, 6, '1m')
    >>> w.bounds(125.0)
    (70, 130)
    >>> w.pane_starts(125.0)
    [70, 80, 90, 100, 110, 120]
    >>> Window.tumbling(60).bounds(125.0)
    (120, 180)
    >>> sorted(windows_from_config({"hourly": {"size": 3600, "slide": 3600},
    ...                             "realtime": {"size": "1m", "slide": "10s"}}))
    ['hourly', 'realtime']
    >>> duration_label(90), duration_label(3600), duration_label(0.25)
    ('90s', '1h', '250ms')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..units import parse_duration

_UNITS_NS = (("d", 86_400 * 10**9), ("h", 3600 * 10**9), ("m", 60 * 10**9), ("s", 10**9),
             ("ms", 10**6), ("us", 10**3), ("ns", 1))  # fmt: skip


def to_ns(seconds: float) -> int:
    """Seconds as integer nanoseconds."""
    return round(float(seconds) * 1_000_000_000)


def duration_label(seconds: float) -> str:
    """A short label of a duration: ``60`` -> ``"1m"``, ``90`` -> ``"90s"``.

    The largest unit dividing the duration wins, so every duration has one label.
    """
    ns = to_ns(seconds)
    if ns <= 0:
        raise ConfigError(f"a duration must be positive, got {seconds!r}")
    for unit, size in _UNITS_NS:
        if ns % size == 0:
            return f"{ns // size}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def parse_seconds(value: Any, name: str) -> int:
    """Whole positive seconds from ``60``, ``"1m"``, ``"1h"`` (ConfigError otherwise)."""
    seconds = parse_duration(value, name=name)
    if seconds is None or seconds <= 0 or seconds != int(seconds):
        raise ConfigError(f"{name} must be a positive whole number of seconds, got {value!r}")
    return int(seconds)


@dataclass(frozen=True)
class Window:
    """A window of ``size`` seconds moving by ``slide`` seconds (tumbling when equal).

    Args:
        size: Length of the window in whole seconds.
        slide: Step between window starts (default ``size``: tumbling); at most ``size``.
        name: Name of the window (``"realtime"``), default its size label (``"1m"``).
        history: How long past windows stay readable, in seconds (default ``size``);
            counters expire their panes after ``history + size``.
    """

    size: int
    slide: int = 0
    name: str = ""
    history: int = 0
    pane: int = field(init=False)

    def __post_init__(self) -> None:
        size = parse_seconds(self.size, "size")
        slide = parse_seconds(self.slide, "slide") if self.slide else size
        if slide > size:
            raise ConfigError(f"a window's slide ({slide}s) cannot exceed its size ({size}s)")
        history = parse_seconds(self.history, "history") if self.history else size
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "slide", slide)
        object.__setattr__(self, "history", history)
        object.__setattr__(self, "pane", math.gcd(size, slide))
        if not self.name:
            object.__setattr__(self, "name", duration_label(size))

    @classmethod
    def tumbling(cls, size: Any, name: str = "") -> Window:
        """A tumbling window of ``size`` seconds."""
        return cls(size=size, slide=size, name=name)

    @property
    def label(self) -> str:
        """The size label used in keys (``"1m"``)."""
        return duration_label(self.size)

    @property
    def tumbling_window(self) -> bool:
        """Whether windows do not overlap."""
        return self.slide == self.size

    @property
    def panes_per_window(self) -> int:
        """How many panes one window sums."""
        return self.size // self.pane

    @property
    def ttl(self) -> int:
        """Seconds a pane must live: the window it is part of, plus the history kept."""
        return self.size + self.history

    def bounds(self, at: float) -> tuple[int, int]:
        """``(start, end)`` of the window at ``at`` (epoch seconds), end excluded."""
        end = math.floor(at / self.slide) * self.slide + self.slide
        return end - self.size, end

    def pane_starts(self, at: float) -> list[int]:
        """Starts of the panes of the window at ``at``."""
        start, end = self.bounds(at)
        return list(range(start, end, self.pane))

    def pane_of(self, at: float) -> int:
        """Start of the pane holding ``at``."""
        return math.floor(at / self.pane) * self.pane


def windows_from_config(spec: Mapping[str, Any] | None) -> dict[str, Window]:
    """Windows by name from the tutorial's ``processing.windows`` section.

    Accepts the section itself or the whole ``processing`` object; sizes and slides in
    seconds or as ``"1m"``-style strings. Raises one ConfigError naming every problem.
    """
    if not spec:
        return {}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"processing.windows must be an object, got {type(spec).__name__}")
    if "windows" in spec and isinstance(spec["windows"], Mapping):
        spec = spec["windows"]
    out: dict[str, Window] = {}
    problems: list[str] = []
    for name, raw in spec.items():
        if not isinstance(raw, Mapping):
            problems.append(f"processing.windows.{name}: must be an object with size/slide")
            continue
        unknown = sorted(set(raw) - {"size", "slide", "history"})
        if unknown:
            problems.append(f"processing.windows.{name}: unknown keys {', '.join(unknown)}")
        try:
            out[name] = Window(
                size=raw.get("size", 0), slide=raw.get("slide", 0) or 0, name=name,
                history=raw.get("history", 0) or 0,
            )  # fmt: skip
        except ConfigError as err:
            problems.append(f"processing.windows.{name}: {err}")
    if problems:
        raise ConfigError("invalid analytics config:\n  " + "\n  ".join(problems))
    return out
