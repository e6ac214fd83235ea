"""Derive the async twin of a blocking method, so that each body is written once."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def async_twin(method: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Return an ``async`` version of ``method`` that runs it in a worker thread.

    The event loop never blocks on a store; the body exists once, in the sync method.
    """

    @functools.wraps(method)
    async def twin(*args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(method, *args, **kwargs)

    twin.__name__ = "a" + method.__name__
    twin.__qualname__ = twin.__qualname__.rsplit(".", 1)[0] + "." + twin.__name__
    twin.__doc__ = f"Async twin of :meth:`{method.__name__}` (same arguments and result)."
    return twin
