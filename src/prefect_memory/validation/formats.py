"""A JSON Schema format checker that really checks ``uuid``, ``email``, ``uri`` and ``date-time``.

``jsonschema`` asserts formats only with a format checker, and some of its checks need
extra packages it does not install: without ``rfc3339-validator`` every ``date-time``
passes, without ``rfc3987``/``rfc3986-validator`` every ``uri`` passes, and its own
``email`` check only looks for an ``@``. Here:

- ``uuid``: the canonical ``8-4-4-4-12`` hexadecimal form (``uuid.UUID`` alone would also
  take braces, ``urn:uuid:`` prefixes and missing dashes);
- ``email``: the syntax rules of ``email-validator`` (no DNS look-up);
- ``uri``: an absolute URI per RFC 3986 (``rfc3986-validator``; a scheme is required, so
  ``/relative`` and ``not a uri`` fail);
- ``date-time``: RFC 3339 (``rfc3339-validator``): a real calendar date and a UTC offset.

A schema that uses one of these formats while its package is missing raises
:class:`~prefect_memory.errors.MissingDependencyError` when the schemas are built, rather
than passing every value silently. ``pip install 'prefect-memory[validation]'`` brings them.

Example:
    >>> checker = format_checker()
    >>> checker.conforms("2024-02-29T12:00:00+01:00", "date-time")
    True
    >>> checker.conforms("2024-02-30T12:00:00Z", "date-time")  # no February 30th
    False
    >>> checker.conforms("2024-01-01T00:00:00", "date-time")  # no UTC offset
    False
    >>> uid = "8c4f3a52-95e4-4c1b-9b7e-2a4a3f1d9b10"
    >>> checker.conforms(uid, "uuid"), checker.conforms("{" + uid + "}", "uuid")
    (True, False)
    >>> checker.conforms("ada@example.com", "email"), checker.conforms("ada@", "email")
    (True, False)
    >>> checker.conforms("https://example.com/a.png", "uri"), checker.conforms("/a.png", "uri")
    (True, False)
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from typing import Any

from jsonschema import FormatChecker

from ..errors import MissingDependencyError

#: The package each strictly checked format needs (module name, pip name).
FORMAT_PACKAGES: dict[str, tuple[str, str]] = {
    "email": ("email_validator", "email-validator"),
    "uri": ("rfc3986_validator", "rfc3986-validator"),
    "date-time": ("rfc3339_validator", "rfc3339-validator"),
}
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def require_format_packages(formats: Iterable[str]) -> None:
    """Raise :class:`MissingDependencyError` if a used format cannot be really checked."""
    missing = []
    for name in sorted(set(formats)):
        module, package = FORMAT_PACKAGES.get(name, (None, None))
        if module is None:
            continue
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(f"{name!r} needs {package}")
    if missing:
        raise MissingDependencyError(
            "JSON Schema formats cannot be checked: "
            + "; ".join(missing)
            + " (pip install 'prefect-memory[validation]')"
        )


def _is_uuid(instance: object) -> bool:
    return not isinstance(instance, str) or _UUID.fullmatch(instance) is not None


def _is_email(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    from email_validator import EmailNotValidError, validate_email

    try:
        validate_email(instance, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def _is_uri(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    from rfc3986_validator import validate_rfc3986

    return validate_rfc3986(instance, rule="URI") is not None


def _is_date_time(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    from rfc3339_validator import validate_rfc3339

    return bool(validate_rfc3339(instance.upper()))


def format_checker() -> FormatChecker:
    """Every format ``jsonschema`` knows, with strict ``uuid``/``email``/``uri``/``date-time``."""
    checker = FormatChecker()
    checks: dict[str, Any] = {
        "uuid": _is_uuid,
        "email": _is_email,
        "uri": _is_uri,
        "date-time": _is_date_time,
    }
    for name, check in checks.items():
        checker.checks(name)(check)
    return checker
