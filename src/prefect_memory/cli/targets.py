"""What ``prefect-memory info TARGET`` looks at: a store URL, a config file or a saved block.

``info`` reads; it creates nothing. A URL naming a local store (``sqlite:``, ``json:``,
``file:``, ``parquet:``) that does not exist is refused before a backend is opened (a
backend would create the folders and an empty database).

Example:
    >>> missing_local_store("sqlite:////no/such/folder/memory.db")
    '/no/such/folder/memory.db'
    >>> missing_local_store("redis://127.0.0.1:6379/0") is None
    True
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ..errors import BackendNotFound, ConfigError
from ..urls import redact_url, split_credentials
from .failures import USAGE, CommandError
from .prefect_api import load_memory_block

if TYPE_CHECKING:
    from ..memory import Memory
    from ..plugins.base import Backend

#: Schemes whose URL password ``info`` hands to the backend as the ``password`` option.
PASSWORD_SCHEMES = ("redis", "rediss", "mongodb", "mongodb+srv")
#: ``type-slug/name`` of a saved block (Prefect slugs: lowercase letters, digits, dashes).
_BLOCK = re.compile(r"[a-z0-9-]+/[^/\\\s]+")
#: Suffixes of files a user may mean (not block names).
_FILE_SUFFIXES = (".json", ".db", ".sqlite", ".sqlite3", ".parquet")


def target_options(target: str) -> tuple[str, dict[str, Any]]:
    """A URL target without its password, and the password as the backend's option.

    The backend then never sees the password inside a URL it could misread (a raw ``/``
    in it reads as the end of the host) and echo in an error.
    """
    scheme = target.partition("://")[0].lower()
    if scheme not in PASSWORD_SCHEMES:
        return target, {}
    url, password = split_credentials(target)
    if password is None:
        return target, {}
    from pydantic import SecretStr

    return url, {"password": SecretStr(password)}


def check_url(url: str) -> str:
    """``url``, once it parses as a URL (a ``ConfigError`` names it, without secrets).

    Example:
        >>> check_url("redis://[::1/0")
        Traceback (most recent call last):
        prefect_memory.errors.ConfigError: redis://[::1/0 is not a valid URL: Invalid IPv6 URL
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading it validates it
    except ValueError as err:
        raise ConfigError(f"{redact_url(url)} is not a valid URL: {err}") from None
    return url


def missing_local_store(url: str) -> str | None:
    """The path of the local store ``url`` names when it does not exist, else ``None``."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme.startswith("parquet::"):  # parquet::file:///dir
        return missing_local_store(url[len("parquet::") :])
    if scheme in ("sqlite", "json", "parquet"):
        from ..plugins.local_paths import local_path_from_url

        path = local_path_from_url(url, allow_memory=scheme == "sqlite")[0]
        if path == ":memory:":
            return None
    elif scheme in ("file", "local"):
        path = unquote(urlsplit(url).path) or rest
    else:
        return None
    return None if os.path.exists(path) else path


def open_target(target: str, namespaces: list[str]) -> list[Memory]:
    """The memories ``info`` looks at: one per namespace.

    Raises:
        BackendNotFound: A URL names a local store that does not exist.
        CommandError: The target is none of a URL, a config file or a saved block.
    """
    import prefect_memory as pm

    if "://" in target:
        url, options = target_options(target)
        check_url(url)  # after the password is out: it may hold '/', '?', '#', '@' or '['
        missing = missing_local_store(url)
        if missing is not None:
            raise BackendNotFound(
                f"{os.path.abspath(missing)} does not exist (info reads a store, it creates "
                "none; a relative path is sqlite:///data/m.db, an absolute one sqlite:////srv/m.db)"
            )
        return [pm.open_memory(url, namespace=ns, **options) for ns in namespaces or ["default"]]
    path = Path(target)
    if path.is_dir():
        raise CommandError(f"{target} is a folder: give a store URL (e.g. file://...)", USAGE)
    if path.is_file() or target.endswith(".json"):
        built = pm.from_config(target)
        if isinstance(built, pm.Namespaces):
            unknown = [ns for ns in namespaces if ns not in built]
            if unknown:
                raise CommandError(
                    f"{target}: no namespace {', '.join(map(repr, unknown))} "
                    f"(the config has {', '.join(built)})",
                    USAGE,
                )
            return [built[ns] for ns in namespaces or list(built)]
        return [built.with_namespace(ns) for ns in namespaces] or [built]
    if _BLOCK.fullmatch(target) and not target.endswith(_FILE_SUFFIXES):
        memory = load_memory_block(target).memory
        return [memory.with_namespace(ns) for ns in namespaces] or [memory]
    if os.sep in target or target.endswith(_FILE_SUFFIXES):
        raise CommandError(f"{target}: no such file", USAGE)
    raise CommandError(
        f"{target!r} is neither a URL, a config file nor a saved block (type-slug/name)", USAGE
    )


def parts(memory: Memory) -> list[tuple[str, Backend]]:
    """``(label, backend)`` of a memory's stores: one, or each part of a composed one.

    The parts are the named children of the memory's backend (tiers, a hybrid's primary
    and secondary), each as it is (behind its wrapper, if any); a wrapped single store
    is one part.
    """
    from ..plugins.base import walk

    found = [(part.role, part.backend) for part in walk(memory.backend, depth=1) if part.role]
    labels = [(f"tier {role[5:]}" if role.startswith("tier:") else role, b) for role, b in found]
    return labels or [("store", memory.backend)]
