"""How every failure of the ``prefect-memory`` command ends: one line and an exit code.

A command raises; it never prints its own errors. :func:`report` (called by the command
group of :mod:`prefect_memory.cli.app`, so for every command) turns what was raised into
one line on stderr, ``error: <what went wrong>``, without secrets, and returns the exit code:

==== =====================================================================================
code what
==== =====================================================================================
2    the command line, the config or the installation must change: a usage error, a
     :class:`~prefect_memory.errors.ConfigError` (bad URL, unknown scheme, bad config file),
     a :class:`~prefect_memory.errors.ValidationError`, an invalid key, a missing package
1    what was asked could not be done: a store or the Prefect API is unreachable or
     refused, a block or a series does not exist, a file cannot be read or written, and
     anything unexpected
130  interrupted (Ctrl-C)
==== =====================================================================================

Set ``PREFECT_MEMORY_TRACEBACK=1`` to also print the traceback (for a bug report).

Example:
    >>> from prefect_memory.errors import BackendUnavailable, ConfigError
    >>> describe(ConfigError("memory.backend: unknown backend 'hybird'"))
    ("memory.backend: unknown backend 'hybird'", 2)
    >>> describe(BackendUnavailable("Redis at 127.0.0.1:1 is unreachable:\\nrefused"))
    ('Redis at 127.0.0.1:1 is unreachable: refused', 1)
    >>> scrub("redis://:hunter22@db/0 is down", secrets_in(["redis://:hunter22@db/0"]))
    'redis://:***@db/0 is down'
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, quote_plus, unquote

import typer
from rich.console import Console
from rich.text import Text

from ..errors import (
    ConfigError,
    InvalidKeyError,
    MissingDependencyError,
    PrefectMemoryError,
    ValidationError,
)
from ..urls import SECRET_WORDS, redact_url, split_credentials

#: Exit codes (see the module docstring).
FAILED, USAGE, INTERRUPTED = 1, 2, 130
#: Set to ``1`` to print the traceback above the error line.
TRACEBACK_VAR = "PREFECT_MEMORY_TRACEBACK"


class CommandError(PrefectMemoryError):
    """A command cannot do what it was asked; the message says what to change.

    Attributes:
        exit_code: ``1`` (it failed) or ``2`` (the input must change).
    """

    def __init__(self, message: str, exit_code: int = FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(PrefectMemoryError):
    """The user pressed Ctrl-C (a ``KeyboardInterrupt`` that typer would end silently)."""


def one_line(text: str) -> str:
    """``text`` on one line: its lines joined (after a ``:`` by a space, else by ``; ``)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    joined = ""
    for line in lines:
        joined += line if not joined else (" " if joined.endswith(":") else "; ") + line
    return joined


def secrets_in(args: Iterable[str]) -> list[str]:
    """The secrets written in command-line arguments: URL passwords, secret query options."""
    found: list[str] = []
    for arg in args:
        if "://" not in arg:
            continue
        password = split_credentials(arg)[1]
        if password:
            found.append(password)
        query = arg.partition("?")[2].partition("#")[0]
        found += [
            value
            for name, value in parse_qsl(query, keep_blank_values=True)
            if value and any(word in name.lower() for word in SECRET_WORDS)
        ]
    return found


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (as written, percent-encoded or decoded) masked."""
    for secret in sorted(secrets, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote_plus(secret), unquote(secret)}:
            if len(form) >= 3:
                text = text.replace(form, "***")
    return text


def _prefect_api() -> str:
    """The Prefect API a failed call went to, as far as this process knows."""
    settings = sys.modules.get("prefect.settings")
    url = getattr(getattr(settings, "PREFECT_API_URL", None), "value", lambda: None)()
    return redact_url(url) if url else "the Prefect API (PREFECT_API_URL is not set)"


def _api_error(err: BaseException) -> BaseException | None:
    """The HTTP error of a Prefect API call behind ``err``, if that is what failed."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__module__.split(".")[0] in ("httpx", "httpcore"):
            return current
        current = current.__cause__ or current.__context__
    return None


def _message(err: BaseException) -> str:
    text = one_line(str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err))
    return text or type(err).__name__


def describe(err: BaseException) -> tuple[str, int]:
    """The line (without ``error:``) and the exit code that end a command failing with ``err``."""
    if isinstance(err, CommandError):
        return _message(err), err.exit_code
    if isinstance(err, Interrupted):
        return "interrupted", INTERRUPTED
    if isinstance(err, typer.Abort):
        return "aborted", FAILED
    if isinstance(err, (ConfigError, ValidationError, InvalidKeyError, MissingDependencyError)):
        return _message(err), USAGE
    if isinstance(err, PrefectMemoryError):
        return _message(err), FAILED
    if isinstance(err, ImportError):
        missing = (err.name or "").split(".")[0]
        if missing == "prefect":
            return (
                f"this command needs Prefect, which cannot be imported ({_message(err)}); "
                "install it with: pip install prefect",
                USAGE,
            )
        hint = f"; install it with: pip install {missing}" if missing else ""
        return f"a package is missing: {_message(err)}{hint}", USAGE
    api = _api_error(err)
    if api is not None:
        status = getattr(getattr(api, "response", None), "status_code", None)
        problem = f"answered {status}" if status else "is unreachable"
        return f"Prefect API at {_prefect_api()} {problem}: {_message(api)}", FAILED
    if isinstance(err, OSError) and err.strerror:
        where = err.filename if err.filename is not None else ""
        return (f"{where}: {err.strerror}" if where else err.strerror), FAILED
    if type(err).__name__ == "ValidationError" and type(err).__module__.startswith("pydantic"):
        return f"invalid value: {_message(err)}", USAGE
    where = f"set {TRACEBACK_VAR}=1 to see where"
    return f"unexpected {type(err).__name__}: {_message(err)} ({where})", FAILED


def _usage(err: typer.TyperException) -> tuple[str, int]:
    """A click usage error (``Missing argument``, ``No such option``) as one line."""
    text = one_line(getattr(err, "format_message", lambda: str(err))())
    ctx = getattr(err, "ctx", None)
    if ctx is not None:
        text += f" (see '{ctx.command_path} --help')"
    return text, int(getattr(err, "exit_code", USAGE))


def report(err: BaseException, args: Iterable[str] = ()) -> int:
    """Print the line that ends a command failing with ``err``; return its exit code.

    Args:
        err: What the command raised.
        args: The command line, whose secrets never reach the line.

    Returns:
        The exit code (see the module docstring).
    """
    if type(err).__name__ == "NoArgsIsHelpError":
        return int(getattr(err, "exit_code", USAGE))  # the help is the answer, already shown
    if isinstance(err, typer.TyperException):
        text, code = _usage(err)
    else:
        text, code = describe(err)
    secrets = secrets_in(args)
    console = Console(stderr=True, soft_wrap=True, highlight=False)
    if os.environ.get(TRACEBACK_VAR, "").strip().lower() in ("1", "true", "yes"):
        details = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        console.print(scrub(details, secrets), markup=False, end="")
    # A Text, not markup: "[redis]" in "pip install 'prefect-memory[redis]'" stays.
    console.print(Text.assemble(("error:", "bold red"), " ", scrub(text, secrets)))
    return code
