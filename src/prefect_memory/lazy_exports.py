"""Lazy package exports: names load their module on first access (keeps imports cheap)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose names live in submodules.

    ``dir()`` lists the lazy names before they are loaded, so tools that walk a module with
    ``inspect.getmembers`` (``prefect block register -m``) find them.

    Args:
        package: The package's ``__name__``.
        exports: Public name -> submodule (relative) that defines it under the same name, or
            ``"submodule:attribute"`` when the submodule's name for it differs.
        namespace: The package's ``globals()``, where loaded names are cached.

    Example:
        >>> exports = {"dumps": "encoder", "Decoder": "decoder:JSONDecoder"}
        >>> getattr_, dir_ = lazy_exports("json", exports, {})
        >>> "dumps" in dir_(), getattr_("Decoder").__name__
        (True, 'JSONDecoder')
    """

    def __getattr__(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = target.partition(":")
        value = getattr(importlib.import_module(f"{package}.{module}"), attribute or name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
