"""Reading a config document: its limits, the JSON file, and the checks of the whole tree.

Everything here looks at the document only (no store is opened): :func:`load_config` reads a
dict or a JSON file, bounds it (:data:`MAX_CONFIG_BYTES`, :data:`MAX_CONFIG_DEPTH`,
:data:`MAX_CONFIG_NODES`, :data:`MAX_CONFIG_STRING`) and returns its ``memory`` section.

Example:
    >>> section, base = load_config({"memory": {"backend": "memory"}})
    >>> section
    {'backend': 'memory'}
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError

#: Largest config file read, in bytes.
MAX_CONFIG_BYTES = 1 << 20
#: Deepest nesting of objects and lists in a config.
MAX_CONFIG_DEPTH = 64
#: Most values (objects, lists, strings, numbers) in a config.
MAX_CONFIG_NODES = 100_000
#: Longest string in a config, in characters.
MAX_CONFIG_STRING = 65_536
#: Largest number in a config: no setting needs more than a 64-bit integer.
MAX_NUMBER = 2**63


def describe(value: Any) -> str:
    """``repr`` of a config value for a message, cut to a readable length.

    Example:
        >>> describe("x" * 100)
        "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...'"
    """
    text = repr(value)
    return text if len(text) <= 60 else text[:50] + "...'"


def config_error(problems: list[str]) -> ConfigError:
    """One :class:`ConfigError` listing every problem (``path: message``) on its own line."""
    return ConfigError("invalid memory config:\n  " + "\n  ".join(problems))


def check_document(data: Any, root: str = "") -> list[str]:
    """The problems of a config document as a whole: depth, size, keys, strings, numbers.

    Iterative (a deep or cyclic document cannot exhaust the stack) and bounded by
    :data:`MAX_CONFIG_NODES` visits.

    Example:
        >>> check_document({"memory": {"ttl": float("nan"), 1: "x"}})
        ['memory: keys are strings, got int 1', 'memory.ttl: nan is not a JSON number']
    """
    problems: list[str] = []
    stack: list[tuple[str, Any, int]] = [(root, data, 0)]
    visits = 0
    while stack:
        path, value, depth = stack.pop()
        visits += 1
        if visits > MAX_CONFIG_NODES:
            problems.append(f"{root or 'config'}: more than {MAX_CONFIG_NODES} values")
            break
        where = path or "config"
        if isinstance(value, Mapping | list | tuple):
            if depth >= MAX_CONFIG_DEPTH:
                problems.append(f"{where}: nested deeper than {MAX_CONFIG_DEPTH} levels")
                continue
            items: list[tuple[str, Any]] = []
            if isinstance(value, Mapping):
                for key, item in value.items():
                    if not isinstance(key, str):
                        problems.append(f"{where}: keys are strings, got "
                                        f"{type(key).__name__} {describe(key)}")  # fmt: skip
                        continue
                    problem = _string_problem(key)
                    if problem:
                        problems.append(f"{where}: a key {problem}")
                        continue
                    items.append((f"{path}.{key}" if path else key, item))
            else:
                items = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
            stack.extend((p, item, depth + 1) for p, item in reversed(items))
        elif isinstance(value, str):
            problem = _string_problem(value)
            if problem:
                problems.append(f"{where}: {problem}")
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{where}: {value} is not a JSON number")
        elif isinstance(value, int | float) and abs(value) > MAX_NUMBER:
            problems.append(f"{where}: {describe(value)} is out of range (at most 2**63)")
    return problems


def _string_problem(text: str) -> str | None:
    if len(text) > MAX_CONFIG_STRING:
        return f"longer than {MAX_CONFIG_STRING} characters ({len(text)})"
    if "\x00" in text:
        return "holds a NUL character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return f"holds a lone surrogate, not valid UTF-8: {describe(text)}"
    return None


def _read_json(path: Path) -> Any:
    """The JSON document of a config file, every failure a ConfigError naming the path."""
    try:
        info = path.stat()
    except FileNotFoundError as err:
        raise ConfigError(f"config file not found: {path}") from err
    except (OSError, ValueError) as err:  # name too long, NUL in the path...
        raise ConfigError(f"config file {path} cannot be read: {err}") from err
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"config path {path} is a directory, not a JSON file")
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block, /dev/zero never ends
        raise ConfigError(f"config path {path} is not a regular file")
    if info.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {path} is {info.st_size} bytes, more than {MAX_CONFIG_BYTES}"
        )
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except PermissionError as err:
        raise ConfigError(f"config file {path}: permission denied") from err
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err}") from err
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return json.loads(
            raw.decode("utf-8-sig"), parse_constant=_no_constant, parse_float=_finite_float
        )
    except RecursionError as err:
        raise ConfigError(
            f"config file {path} is nested deeper than {MAX_CONFIG_DEPTH} levels"
        ) from err
    except ValueError as err:  # also UnicodeDecodeError
        raise ConfigError(f"config file {path} is not valid JSON: {err}") from err


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def load_document(
    source: Mapping[str, Any] | str | os.PathLike[str],
) -> tuple[Mapping[str, Any], Path]:
    """Read a whole config document (dict or JSON file), checked; return it and its folder.

    The other top-level sections (``maintenance``) are read from what this returns, so a
    file is read and bounded once.

    Raises:
        ConfigError: The file cannot be read or is not JSON, or the document is past a
            limit (:data:`MAX_CONFIG_BYTES`, :data:`MAX_CONFIG_DEPTH`,
            :data:`MAX_CONFIG_NODES`, :data:`MAX_CONFIG_STRING`), holds ``NaN``, numbers
            out of range, non-string keys or unknown top-level keys: every problem with
            its path.
    """
    if isinstance(source, Mapping):
        data, base = source, Path.cwd()
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        data, base = _read_json(path), path.absolute().parent
    else:
        raise ConfigError(
            f"a config is a dict or the path of a JSON file, got {type(source).__name__}"
        )
    if not isinstance(data, Mapping):
        raise ConfigError(f"a memory config is a JSON object, got {type(data).__name__}")
    problems = check_document(data, "" if "memory" in data else "memory")
    if problems:
        raise config_error(problems)
    section = data.get("memory", data)
    if not isinstance(section, Mapping):
        raise ConfigError(f"memory: must be an object, got {type(section).__name__}")
    unknown = set(data) - {"memory", "maintenance"} if "memory" in data else set()
    if unknown:
        lines = [
            f"{k}: unknown top-level key (expected 'memory', 'maintenance')"
            for k in sorted(unknown)
        ]
        raise config_error(lines)
    return data, base


def load_config(source: Mapping[str, Any] | str | os.PathLike[str]) -> tuple[dict[str, Any], Path]:
    """Read a config (dict or JSON file); return its ``memory`` section and its folder.

    Raises:
        ConfigError: As :func:`load_document`.
    """
    data, base = load_document(source)
    return dict(data.get("memory", data)), base
