"""Local paths from ``sqlite://`` and ``json://`` URLs (SQLAlchemy's convention)."""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import ConfigError


def local_path_from_url(url: str, *, allow_memory: bool = False) -> tuple[str, dict[str, str]]:
    """Split ``scheme:///relative/path`` or ``scheme:////absolute/path`` into path and query.

    Example:
        >>> local_path_from_url("sqlite:///data/memory.db")
        ('data/memory.db', {})
        >>> local_path_from_url("json:////tmp/backup.json?indent=2")
        ('/tmp/backup.json', {'indent': '2'})
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"not a URL: {url!r}")
    parts = urlsplit("x://" + rest)
    if parts.netloc and parts.netloc not in ("localhost",):
        raise ConfigError(
            f"{scheme}:// URLs name a local file: use {scheme}:///relative/path or "
            f"{scheme}:////absolute/path, got {url!r}"
        )
    path = unquote(parts.path)
    path = path[1:] if path.startswith("/") else path
    if not path or path == ":memory:":
        if allow_memory:
            return ":memory:", dict(parse_qsl(parts.query))
        raise ConfigError(f"{scheme}:// URL names no file: {url!r}")
    return os.path.expanduser(path), dict(parse_qsl(parts.query))
