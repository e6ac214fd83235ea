"""Sizes and durations as users write them in configs: ``"100MB"``, ``"1h"``, ``"unlimited"``.

Example:
    >>> parse_size("100MB")
    104857600
    >>> parse_size("unlimited") is None
    True
    >>> parse_duration("1.5h")
    5400.0
    >>> parse_duration(30)
    30.0
"""

from __future__ import annotations

import math
import re

from .errors import ConfigError

SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_UNLIMITED = {"unlimited", "none", "inf", "infinite", ""}


def parse_size(value: object, *, name: str = "size") -> int | None:
    """Bytes from ``"100MB"``/``"1GB"``/``1024`` (powers of 1024); ``None`` for unlimited."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _UNLIMITED):
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a size like '100MB', got {value!r}")
    if isinstance(value, (int, float)):
        if value <= 0 or math.isinf(value):
            raise ConfigError(f"{name} must be positive, got {value!r}")
        return int(value)
    if isinstance(value, str):
        m = _NUMBER_UNIT.match(value)
        if m:
            factor = SIZE_UNITS.get((m.group(2) or "b").lower())
            if factor is not None and float(m.group(1)) > 0:
                return int(float(m.group(1)) * factor)
    raise ConfigError(
        f"{name} must be a size like '100MB', '1GB' or 'unlimited' "
        f"(units: {', '.join(u.upper() for u in SIZE_UNITS)}), got {value!r}"
    )


def parse_duration(value: object, *, name: str = "duration") -> float | None:
    """Seconds from ``"1h"``/``"7d"``/``3600``; ``None`` stays ``None`` (no limit)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be seconds or a duration like '1h', got {value!r}")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ConfigError(f"{name} must be positive, got {value!r}")
        return float(value)
    if isinstance(value, str):
        m = _NUMBER_UNIT.match(value)
        if m:
            factor = DURATION_UNITS.get((m.group(2) or "s").lower())
            if factor is not None and float(m.group(1)) > 0:
                return float(m.group(1)) * factor
    raise ConfigError(
        f"{name} must be seconds or a duration like '1h' "
        f"(units: {', '.join(DURATION_UNITS)}), got {value!r}"
    )
