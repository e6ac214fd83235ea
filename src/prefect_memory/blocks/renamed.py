"""Former block class names: deprecated aliases that are the renamed classes themselves.

``HybridMemory`` and ``TieredMemory`` were the names of both the engine classes and the
blocks (with different constructors); the blocks are now ``HybridMemoryBlock`` and
``TieredMemoryBlock``. ``MongoMemory`` became ``MongoDBMemory``, as its slug
(``mongodb-memory``) says. The slugs did not change, so saved blocks and deployments still
load. A former name warns once per use and stays out of ``dir()`` (``inspect.getmembers``,
which ``prefect block register -m`` uses, does not see it, so no block registers twice).

Example:
    >>> import warnings
    >>> getattr_ = renamed_getattr("pkg.mod", {"Old": "New"}, {"New": int})
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     getattr_("Old") is int, str(caught[0].message)
    (True, 'pkg.mod.Old is deprecated, use New (same class, same block type slug)')
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

#: Former block class name -> its name now.
RENAMED_BLOCKS = {
    "HybridMemory": "HybridMemoryBlock",
    "TieredMemory": "TieredMemoryBlock",
    "MongoMemory": "MongoDBMemory",
}


def renamed_getattr(
    module: str, renamed: Mapping[str, str], namespace: Mapping[str, Any]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` that resolves former names to the renamed objects, warning.

    Args:
        module: The module's ``__name__`` (named in the warning and in the error).
        renamed: Former name -> name now.
        namespace: Where the current names live (the module's ``globals()``).

    Returns:
        The ``__getattr__``: a former name returns the object now under its new name and
        emits a :class:`DeprecationWarning` naming it; any other name raises
        :class:`AttributeError`.
    """

    def __getattr__(name: str) -> Any:
        new = renamed.get(name)
        if new is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(
            f"{module}.{name} is deprecated, use {new} (same class, same block type slug)",
            DeprecationWarning,
            stacklevel=2,
        )
        return namespace[new]

    return __getattr__


__all__ = ["RENAMED_BLOCKS", "renamed_getattr"]
