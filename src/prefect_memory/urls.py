"""Credentials in store URLs: read them out, keep them out of messages.

Generated passwords often hold ``/``, ``?``, ``#``, ``@``, ``:`` or ``%`` unencoded, which
``urllib`` reads as the path, the query or the fragment: these helpers read the user info
up to the LAST ``@`` that a host follows. Blocks, the CLI and the stores use them to move a
password into a secret field and to show a URL without its secrets; every store keeps
its credentials in a :class:`Secret`. No Prefect import (nor pydantic):
``prefect-memory info`` starts without Prefect.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import unquote, unquote_plus

#: A query option whose name holds one of these carries a secret (masked, or moved to a field).
SECRET_WORDS = ("password", "passwd", "passphrase", "secret", "token", "credential")
#: What may follow the ``@`` of the user info: ``host[:port]``, comma-separated (MongoDB).
_HOSTS = re.compile(r"[\w.~%\-]*(?:\[[0-9A-Fa-f:.]+\])?(?::\d*)?(?:,[\w.~%\-]*(?::\d*)?)*")
_UNENCODED = re.compile(r"[/?#@]|%(?![0-9A-Fa-f]{2})")


def _userinfo(url: str) -> tuple[str, str, str | None, str] | None:
    """``(scheme, user, password, rest)`` of a URL with credentials, else ``None``.

    The user info runs from ``://`` to the LAST ``@`` that a host follows, so a password
    may hold ``/``, ``?``, ``#``, ``@``, ``:`` or ``%`` unencoded (generated secrets do). The
    user name is what comes before the first ``:``.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    at = len(rest)
    while (at := rest.rfind("@", 0, at)) >= 0:
        host = re.split(r"[/?#]", rest[at + 1 :], maxsplit=1)[0]
        if host and _HOSTS.fullmatch(host):
            break
    if at < 0:
        return None
    user, colon, password = rest[:at].partition(":")
    if re.search(r"[/?#@]", user):
        return None  # not a user name: an '@' of the path or query
    return scheme, user, _decoded(password) if colon else None, rest[at + 1 :]


def _decoded(password: str) -> str:
    """A password from a URL: percent-decoded unless it plainly was not encoded."""
    if _UNENCODED.search(password):
        return password  # a raw '/', '?', '#', '@' or a lone '%': taken as written
    try:
        return unquote(password, errors="strict")
    except UnicodeDecodeError:
        return password


def split_credentials(url: str) -> tuple[str, str | None]:
    """Remove the password from a URL's user info; return the URL and the password.

    Example:
        >>> split_credentials("redis://:Ab/c?d#e@cache.local:6380/2")
        ('redis://cache.local:6380/2', 'Ab/c?d#e')
        >>> split_credentials("mongodb://bob:p%40ss@db:27017/app")
        ('mongodb://bob@db:27017/app', 'p@ss')
        >>> split_credentials("redis://cache.local:6380/2")
        ('redis://cache.local:6380/2', None)
    """
    found = _userinfo(url)
    if found is None or found[2] is None:
        return url, None
    scheme, user, password, rest = found
    return f"{scheme}://{user}@{rest}" if user else f"{scheme}://{rest}", password


def _secret_name(name: str) -> bool:
    lowered = unquote_plus(name).lower()
    return any(word in lowered for word in SECRET_WORDS)


def redact_url(url: str) -> str:
    """``url`` for a message: ``***`` for its password and every secret query option.

    Example:
        >>> redact_url("mongodb://bob:s/3#c@db:27017/app?tlsCertificateKeyFilePassword=k&w=1")
        'mongodb://bob:***@db:27017/app?tlsCertificateKeyFilePassword=***&w=1'
        >>> redact_url("redis://bob:s3cr3t@[::1/0")  # malformed: masked all the same
        'redis://bob:***@[::1/0'
    """
    found = _userinfo(url)
    if found is not None:
        scheme, user, password, rest = found
        url = f"{scheme}://{user}{'' if password is None else ':***'}@{rest}"
    else:  # no host we recognise after an '@' (a malformed URL): mask all that may be one
        scheme, sep, rest = url.partition("://")
        at, colon = rest.rfind("@"), rest.find(":")
        if sep and 0 <= colon < at and not re.search(r"[/?#]", rest[:colon]):
            url = f"{scheme}://{rest[:colon]}:***{rest[at:]}"
    head, question, query = url.partition("?")
    if not question:
        return url
    query, hash_, fragment = query.partition("#")
    masked = []
    for item in re.split("([&;])", query):
        name, eq, _value = item.partition("=")
        masked.append(f"{name}=***" if eq and _secret_name(name) else item)
    return f"{head}?{''.join(masked)}{hash_}{fragment}"


#: Not a cipher: only keeps a credential's plain text out of pickled bytes (see Secret).
_MASK = b"prefect-memory/storage-options-mask"


class Secret:
    """A credential (a password, an S3 secret, a URL with passwords): masked everywhere.

    ``repr``, ``str``, error messages and logs show ``**********``; the plain text is
    taken out only to build a client. A pickle must let another process reach the store,
    so it carries the credential, but never as plain text (it is masked, not encrypted:
    whoever can read a pickle of a store can use its credentials). The one wrapper of
    every store (``plugins.redis.connection.Secret``, ``plugins.mongodb._Secret`` and
    ``plugins.fs.SecretOption`` are this class); pickles made with those old classes load.

    Example:
        >>> import pickle
        >>> secret = Secret("s3cr3t")
        >>> secret, str(secret), b"s3cr3t" in pickle.dumps(secret)
        (Secret('**********'), '**********', False)
        >>> pickle.loads(pickle.dumps(secret)).get_secret_value()
        's3cr3t'
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        """The plain text (for a client's constructor only)."""
        return self._value

    @property
    def value(self) -> str:
        """The plain text, under the name the MongoDB wrapper gave it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and self._value == other._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _unmask, (_mask(self._value),)

    def __setstate__(self, state: str) -> None:
        # Pickles of the old Redis and MongoDB wrappers: the plain text as the state.
        self._value = state


def _mask(text: str) -> str:
    data = text.encode("utf-8")
    pad = _MASK * (len(data) // len(_MASK) + 1)
    return base64.b64encode(bytes(b ^ m for b, m in zip(data, pad, strict=False))).decode()


def _unmask(masked: str) -> Secret:
    data = base64.b64decode(masked)
    pad = _MASK * (len(data) // len(_MASK) + 1)
    return Secret(bytes(b ^ m for b, m in zip(data, pad, strict=False)).decode("utf-8"))


__all__ = ["SECRET_WORDS", "Secret", "redact_url", "split_credentials"]
