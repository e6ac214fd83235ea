"""Sizes and durations as users write them in configs: ``"100MB"``, ``"1h"``, ``"unlimited"``.

Both are bounded: a duration is at most :data:`MAX_DURATION` seconds (100 years, the
longest TTL every store holds), a size at most :data:`MAX_SIZE` bytes. ``NaN``,
infinities, booleans and numbers past the bound are refused with a
:class:`~prefect_memory.errors.ConfigError` instead of becoming ``inf`` or overflowing later.

Example:
    >>> parse_size("100MB")
    104857600
    >>> parse_size("unlimited") is None
    True
    >>> parse_duration("1.5h")
    5400.0
    >>> parse_duration(30)
    30.0
    >>> parse_duration(1e308)
    Traceback (most recent call last):
    ...
    prefect_memory.errors.ConfigError: duration must be at most 3155760000 seconds ...
"""

from __future__ import annotations

import math
import re

from .errors import ConfigError

SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
#: Longest duration accepted, in seconds (100 years: :data:`prefect_memory.keys.MAX_TTL`).
MAX_DURATION = 100 * 365.25 * 86400.0
#: Largest size accepted, in bytes (1 EiB).
MAX_SIZE = 2**60
#: Longest size or duration text accepted (``"100MB"`` is 5 characters).
MAX_TEXT = 64
_NUMBER_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$", re.ASCII)
_UNLIMITED = {"unlimited", "none", "inf", "infinite", ""}


def _number(value: object, name: str, what: str) -> float | None:
    """``value`` as a float if it is a finite int or float (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int) and abs(value) > 2**64:
        raise ConfigError(f"{name} is out of range: {what}, got a {value.bit_length()}-bit int")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number ({what}), got {value!r}")
    return number


def _text_number(value: str, units: dict[str, float] | dict[str, int], default: str) -> float:
    """The number of ``"<number><unit>"`` times its unit, or ``nan`` when it does not parse."""
    if len(value) > MAX_TEXT:
        return math.nan
    m = _NUMBER_UNIT.match(value)
    if not m:
        return math.nan
    factor = units.get((m.group(2) or default).lower())
    if factor is None:
        return math.nan
    return float(m.group(1)) * factor


def parse_size(value: object, *, name: str = "size") -> int | None:
    """Bytes from ``"100MB"``/``"1GB"``/``1024`` (powers of 1024); ``None`` for unlimited.

    Raises:
        ConfigError: Not a size, not positive, or above :data:`MAX_SIZE`.
    """
    if value is None or (
        isinstance(value, str) and len(value) <= MAX_TEXT and value.strip().lower() in _UNLIMITED
    ):
        return None
    number = _number(value, name, "bytes or a size like '100MB'")
    if number is None and isinstance(value, str):
        number = _text_number(value, SIZE_UNITS, "b")
        if math.isnan(number):
            number = None
    if number is None:
        raise ConfigError(
            f"{name} must be a size like '100MB', '1GB' or 'unlimited' "
            f"(units: {', '.join(u.upper() for u in SIZE_UNITS)}), got {_show(value)}"
        )
    if not number >= 1:
        raise ConfigError(f"{name} must be at least 1 byte, got {_show(value)}")
    if number > MAX_SIZE:
        raise ConfigError(
            f"{name} must be at most {MAX_SIZE} bytes (1 EiB; 'unlimited' for no limit), "
            f"got {_show(value)}"
        )
    return int(number)


def parse_duration(value: object, *, name: str = "duration") -> float | None:
    """Seconds from ``"1h"``/``"7d"``/``3600``; ``None`` stays ``None`` (no limit).

    Raises:
        ConfigError: Not a duration, not positive, or above :data:`MAX_DURATION`.
    """
    if value is None:
        return None
    number = _number(value, name, "seconds or a duration like '1h'")
    if number is None and isinstance(value, str):
        number = _text_number(value, DURATION_UNITS, "s")
        if math.isnan(number):
            number = None
    if number is None:
        raise ConfigError(
            f"{name} must be seconds or a duration like '1h' "
            f"(units: {', '.join(DURATION_UNITS)}), got {_show(value)}"
        )
    if not number > 0:
        raise ConfigError(f"{name} must be positive, got {_show(value)}")
    if number > MAX_DURATION:
        raise ConfigError(
            f"{name} must be at most {MAX_DURATION:.0f} seconds (100 years; null for no "
            f"limit), got {_show(value)}"
        )
    return number


def _show(value: object) -> str:
    """``repr`` of a config value, cut to a readable length."""
    text = repr(value) if isinstance(value, (str, int, float)) else type(value).__name__
    return text if len(text) <= 80 else text[:60] + f"... ({len(text)} characters)"
