"""Lazy package exports: names load their module on first access (keeps imports cheap)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose names live in submodules.

    Args:
        package: The package's ``__name__``.
        exports: Public name -> submodule (relative) that defines it.
        namespace: The package's ``globals()``, where loaded names are cached.

    Example:
        >>> getattr_, dir_ = lazy_exports("json", {"dumps": "encoder"}, {})
        >>> "dumps" in dir_()
        True
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
