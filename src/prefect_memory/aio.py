"""Async twins with one body: sans-I/O bodies driven by a blocking or an async driver.

A body is a generator that does no I/O itself: it yields each request (a backend call, a
Redis command) and receives its reply (or has the request's exception thrown into it), and
returns the result. :func:`drive` runs it with blocking calls; :func:`adrive` awaits the
async ones on the running event loop. So a method and its ``a``-prefixed twin share
every line of their logic (validation, codecs, hooks, decoding, error handling), and the
async one never hops to a thread when the store has an async driver.

:func:`async_twin` is the fallback for what has no async driver: the blocking method, run
in a worker thread so that the event loop never blocks on a store.

Example:
    >>> import asyncio
    >>> def body(n):
    ...     doubled = yield ("double", n)
    ...     return doubled + 1
    >>> drive(body(20), lambda request: request[1] * 2)
    41
    >>> async def adouble(request):
    ...     return request[1] * 2
    >>> asyncio.run(adrive(body(20), adouble))
    41
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")

#: A sans-I/O body: yields requests, is sent their replies, returns its result.
Body = Generator[Any, Any, R]


def drive(body: Generator[S, Any, R], perform: Callable[[S], Any]) -> R:
    """Run ``body`` to its result, answering each request with ``perform(request)``.

    An exception of ``perform`` is thrown into the body at the ``yield`` (which may handle
    it), so a body reads as straight-line code around its requests.
    """
    try:
        request = next(body)
        while True:
            try:
                reply = perform(request)
            except BaseException as err:
                request = body.throw(err)
            else:
                request = body.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def adrive(body: Generator[S, Any, R], perform: Callable[[S], Awaitable[Any]]) -> R:
    """:func:`drive` on the event loop: each request is answered by ``await perform(request)``."""
    try:
        request = next(body)
        while True:
            try:
                reply = await perform(request)
            except BaseException as err:
                request = body.throw(err)
            else:
                request = body.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


#: One backend call of a body: ``(method, args, kwargs)``, made by :func:`call`.
Call = tuple[str, tuple[Any, ...], dict[str, Any]]


def call(method: str, *args: Any, **kwargs: Any) -> Call:
    """One backend call of a body: ``backend.<method>(*args, **kwargs)``.

    The blocking driver calls ``method``; the async one awaits ``a<method>`` (the
    backend's native async twin, see :attr:`.Capabilities.native_async`). A plain tuple:
    a body makes one per round trip, on the hot path.

    Example:
        >>> call("get_many", "ns", ["k"], now=0.0)
        ('get_many', ('ns', ['k']), {'now': 0.0})
    """
    return (method, args, kwargs)


def async_twin(method: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Return an ``async`` version of ``method`` that runs it in a worker thread.

    For what has no async driver: the event loop never blocks on a store; the body
    exists once, in the sync method.
    """

    @functools.wraps(method)
    async def twin(*args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(method, *args, **kwargs)

    twin.__name__ = "a" + method.__name__
    twin.__qualname__ = twin.__qualname__.rsplit(".", 1)[0] + "." + twin.__name__
    twin.__doc__ = f"Async twin of :meth:`{method.__name__}` (same arguments and result)."
    return twin


__all__ = ["Body", "Call", "adrive", "async_twin", "call", "drive"]
