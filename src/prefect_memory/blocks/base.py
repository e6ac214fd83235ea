"""The base of every memory block: configuration that builds a :class:`~prefect_memory.Memory`.

A :class:`MemoryBlock` is a Prefect ``Block`` (saved in the Prefect API, shown in the UI's block
catalog) and a ``WritableFileSystem`` (usable as ``result_storage``). It holds configuration
only: the :class:`~prefect_memory.Memory` it delegates to is built on first use, cached on the
instance, never serialized, and rebuilt after pickling or copying.

Every block type is catalogued with the same logo (:data:`LOGO_URL`) and a documentation
URL: the anchor of its block type slug on the blocks page (:data:`BLOCKS_DOCS_URL`).

Example:
    >>> from prefect_memory.blocks import InProcessMemory
    >>> InProcessMemory._documentation_url
    'https://prefect-memory.readthedocs.io/en/latest/blocks/#in-process-memory'
    >>> block = InProcessMemory(name="docs-base", namespace="sessions", ttl=60)
    >>> block.set("session:42", {"user": 7})
    >>> block.get("session:42")
    {'user': 7}
    >>> block.delete("session:42")
    True
"""

from __future__ import annotations

import base64
import datetime as _dt
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from prefect.blocks.core import Block
from prefect.blocks.system import Secret
from prefect.filesystems import WritableFileSystem
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from ..aio import async_twin
from ..errors import PrefectMemoryError
from ..keys import MAX_TTL, validate_namespace
from ..memory import _UNSET, TTL, EntryInfo, Memory
from .result_payloads import MIN_SIGNING_KEY_LENGTH, _RecentReads
from .results import ResultStorageMixin

#: Base URL of the documentation site (the ``site_url`` of ``mkdocs.yml`` when it has one).
DOCS_BASE_URL = "https://prefect-memory.readthedocs.io/en/latest/"
#: The blocks page (``docs/blocks.md``); each block type has a heading whose anchor is its slug.
BLOCKS_DOCS_URL = DOCS_BASE_URL + "blocks/"
#: The logo's path on the documentation site (``docs/img/prefect-memory-logo.png``).
LOGO_PATH = "img/prefect-memory-logo.png"
#: The logo of every block type. Not a ``data:`` URL: Prefect's client models type
#: ``logo_url`` as ``HttpUrl`` (http or https only), so a ``data:`` logo could not be registered
#: and would break every client read of the block type (see docs/blocks.md).
LOGO_URL = DOCS_BASE_URL + LOGO_PATH
_LOGO_PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAGAAAABgCAMAAADVRocKAAAAYFBMVEVGot8ZHzYbHjQAAFwaHjYaHjbspSOnSWFn"
    "Nk00bZqXbCsAAP8AVVUrU3g/jMNtUi87gbS3gCgZHjXoXHT1piJIqOYbIDcAAAAnJTfyYHjaWHBOLkVRQTHmnCQd"
    "KEElQWIz2dlNAAAAIHRSTlP/qSkCVcr//////wED///////+/////gD//////////70pCv4AAAIeSURBVHja7ZrZ"
    "joMwDEWdsJbuLCHQ7f//cgzDTAVIhMRxX8qV+lbuiXGwSx2oBwX4kaGIcqIiEcrBrhe8/UOhUFRA5yHCNwH+/Dv7"
    "3JN6RDCOwKP9gBhFIIVX+x4h5D9gLyPv/kiI5P4XENSCwb+LocsD1Acm/55wqCGoJZM/EmQdICDiA0QIYAygDwHY"
    "MjBkAWTOKgmh4vRXIQhegICIFxBBzqwNYA8gNh5lAuAXNEHGCFR+S1qCknQZoPK0aQqKmmQJgOun2XeEdJyHCSAh"
    "A4pWL9wi3ZL9i+Y2CmEDGLM8TTIdUOilbZrSt2mysE1R1H3aTHbpvNilbdG4q0j0pN7Ny7W+uSvVs3oKxnrruVwP"
    "L0Gu+pKeTL0pvnuysgNY92TTkmY9+X59WCk+Lwcx7cnn0lZxth6A6y9Lz4QJ4OoAKB96gQAjf/1wAZT3DeALgIqd"
    "AGuT3D0GMes2xS9m1oQ41jaAPLNNQ6YtSkVXuPTdStpQT+k92VDfgdySv/E9mdqF6T1ZUQB48dMgux8Gs578uoBB"
    "p6NNENMn+VhBZRLsXAG4frO9JWECuKwCVKBWE8YN57nOv6peG4AHgDqtBDzdAPgY8G5TvGy3ggAn5Q5YQ9gp51LR"
    "lTH1MuhpVU9derJVS3Dpydt/154B7AMK9hEL+5CIfczFPqhjHzWyD0vZx73sA2v+kTv/oQH+Yw8fOLjxgaMn3Idn"
    "+I7//AD6DKMMDIstRgAAAABJRU5ErkJggg=="
)
#: The logo's PNG (96 x 96 pixels, 751 bytes): what :data:`LOGO_URL` serves.
LOGO_PNG: bytes = base64.b64decode(_LOGO_PNG_BASE64)


class _Lazy:
    """Per-instance cache of the built memories; never pickled, never shared by copies."""

    __slots__ = ("keys_memory", "lock", "memory", "recent")

    def __init__(self) -> None:
        self.memory: Memory | None = None
        self.keys_memory: Memory | None = None
        self.recent = _RecentReads()
        self.lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Lazy, ())

    def __copy__(self) -> _Lazy:
        return _Lazy()

    def __deepcopy__(self, memo: dict[int, Any]) -> _Lazy:
        return _Lazy()


def _comparable(value: Any, *, hashable: bool = False) -> Any:
    """A setting as compared by :meth:`MemoryBlock.__eq__` (``hashable``: and hashed).

    Nested pydantic models other than memory blocks (a tier, a rule, a Prefect credentials
    block) become their type and fields, so that their private state (a document id) does
    not count either. With ``hashable``, lists become tuples and mappings and sets
    frozensets; ``SecretStr`` compares and hashes its value, as pydantic does (never shown).
    """
    if isinstance(value, MemoryBlock):
        return value
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        return (
            type(value),
            tuple((n, _comparable(getattr(value, n), hashable=hashable)) for n in fields),
        )
    if isinstance(value, (list, tuple)):
        items = [_comparable(item, hashable=hashable) for item in value]
        return tuple(items) if hashable or isinstance(value, tuple) else items
    if isinstance(value, Mapping):
        pairs = {key: _comparable(item, hashable=hashable) for key, item in value.items()}
        return frozenset(pairs.items()) if hashable else pairs
    if isinstance(value, (set, frozenset)):
        return frozenset(_comparable(item, hashable=hashable) for item in value)
    if hashable:
        try:
            hash(value)
        except TypeError:  # an unhashable setting of an unknown kind: only its type counts
            return type(value)
    return value


class _EntryOrBlockDocument:
    """``Cls.delete(name)`` keeps Prefect's meaning; ``block.delete(key)`` deletes an entry.

    Prefect's ``Block.delete`` and ``Block.adelete`` are classmethods that delete a saved
    block document. On an instance, the memory API wins: ``block.delete("k")`` removes the
    entry ``k``.
    """

    def __init__(self, entry_method: Callable[..., Any]) -> None:
        self.entry_method = entry_method
        self.__doc__ = entry_method.__doc__
        self.name = entry_method.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return Block.__dict__[self.name].__get__(None, owner)
        return self.entry_method.__get__(instance, owner)


def _entry_delete(self: MemoryBlock, key: str) -> bool:
    """Delete the entry ``key``; return whether a live entry was removed.

    On the class, ``delete(name)`` keeps Prefect's meaning: it deletes the saved block
    document ``name``.
    """
    return self.memory.delete(key)


async def _entry_adelete(self: MemoryBlock, key: str) -> bool:
    """Async twin of ``delete`` on an instance (on the class: Prefect's ``adelete(name)``)."""
    return await self.memory.adelete(key)


_entry_delete.__name__ = "delete"
_entry_adelete.__name__ = "adelete"


class MemoryBlock(ResultStorageMixin, WritableFileSystem, ABC):
    """Base of the memory blocks: a namespace, a default TTL and a lazily built Memory.

    Subclasses declare their connection fields and implement :meth:`_memory_url` and
    :meth:`_memory_options`; everything else (the memory API, result storage, locks) is here.
    """

    # Inputs stay out of validation errors: they would show secrets (a password, the signing key).
    model_config = ConfigDict(validate_assignment=True, hide_input_in_errors=True)

    _logo_url: ClassVar[Any] = LOGO_URL
    _documentation_url: ClassVar[Any] = BLOCKS_DOCS_URL

    namespace: str = Field(
        default="default",
        description="Namespace of the keys: memories with another namespace never see them.",
    )
    ttl: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TTL,
        description=(
            "Default time to live in seconds of entries and of stored task results "
            "(empty: no expiry; at most 100 years)."
        ),
    )
    refresh: bool = Field(
        default=False,
        description="Sliding expiry: each read pushes an entry's expiry to now + its ttl.",
    )
    compression: bool = Field(
        default=False,
        description="zstd-compress values of 4 KiB and more (readers need no setting).",
    )
    result_signing_key: SecretStr | None = Field(
        default=None,
        description=(
            f"Secret of at least {MIN_SIGNING_KEY_LENGTH} characters that signs the task "
            "results this block stores; a stored result without a valid signature is then "
            "refused before Prefect deserializes it (empty: stored results are trusted)."
        ),
    )

    _lazy: _Lazy = PrivateAttr(default_factory=_Lazy)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "_documentation_url" not in cls.__dict__:  # the anchor of the block type's heading
            cls._documentation_url = BLOCKS_DOCS_URL + "#" + cls.get_block_type_slug()

    # -- validation --------------------------------------------------------------------------
    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, values: Any) -> Any:
        # Prefect's Block accepts any extra key; a typo in a field name should not pass.
        if isinstance(values, dict):
            unknown = sorted(
                str(name)
                for name in values
                if name not in cls.model_fields
                and name != "block_type_slug"
                and not str(name).startswith("_")
            )
            if unknown:
                raise ValueError(
                    f"unknown field(s) {', '.join(unknown)}; the fields of {cls.__name__} "
                    f"are {', '.join(cls.model_fields)}"
                )
        return values

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, value: str) -> str:
        try:
            return validate_namespace(value)
        except PrefectMemoryError as err:
            raise ValueError(str(err)) from None

    @field_validator("ttl", mode="before")
    @classmethod
    def _ttl_seconds(cls, value: Any) -> Any:
        if isinstance(value, _dt.timedelta):
            return value.total_seconds()
        if isinstance(value, bool):
            raise ValueError("ttl must be a number of seconds, not a bool")
        return value

    @field_validator("result_signing_key", mode="before")
    @classmethod
    def _check_signing_key(cls, value: Any) -> Any:
        # Messages never echo the value (and hide_input_in_errors keeps pydantic from it).
        if isinstance(value, Secret):  # a Prefect Secret block: its value is the key
            value = value.get()
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("must be a string, a SecretStr or a Secret block holding a string")
        if len(value) < MIN_SIGNING_KEY_LENGTH:
            raise ValueError(f"must be at least {MIN_SIGNING_KEY_LENGTH} characters long")
        return SecretStr(value)

    @classmethod
    def from_connection_string(cls, url: str, **fields: Any) -> MemoryBlock:
        """Build the block from a connection string plus any other fields.

        Args:
            url: The store's URL (for example ``redis://host:6379/0``).
            **fields: Other fields of the block (``namespace``, ``ttl``...).

        Returns:
            The block (not saved).
        """
        return cls(url=url, **fields)

    # -- the memory ----------------------------------------------------------------------------
    @abstractmethod
    def _memory_url(self) -> str:
        """The URL the memory is opened on."""

    def _memory_options(self) -> dict[str, Any]:
        """Backend options (secrets included) for :func:`prefect_memory.open_memory`."""
        return {}

    def _build_memory(self) -> Memory:
        from .. import open_memory

        return open_memory(
            self._memory_url(),
            namespace=self.namespace,
            ttl=self.ttl,
            refresh=self.refresh,
            compression=self._value_compression(),
            **self._memory_options(),
        )

    def _value_compression(self) -> bool:
        """Whether values are zstd-compressed (the Parquet archive's ``compression`` is
        its file codec instead)."""
        return bool(self.compression)

    def parts(self) -> dict[str, MemoryBlock]:
        """The blocks this one is composed of, by role (none for a single store)."""
        return {}

    def _memory_settings(self) -> dict[str, Any]:
        """``namespace``, ``ttl``, ``refresh`` and ``codec`` of a composed memory."""
        from ..codecs import Codec

        return {
            "namespace": self.namespace,
            "ttl": self.ttl,
            "refresh": self.refresh,
            "codec": Codec(compression=True) if self.compression else None,
        }

    @property
    def memory(self) -> Memory:
        """The :class:`~prefect_memory.Memory` this block configures (built on first use)."""
        lazy = self._lazy
        memory = lazy.memory
        if memory is None:
            with lazy.lock:
                if lazy.memory is None:
                    lazy.memory = self._build_memory()
                memory = lazy.memory
        return memory

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in type(self).model_fields:
            self._lazy = _Lazy()  # the configuration changed: rebuild on next use

    def __copy__(self) -> MemoryBlock:
        copied = super().__copy__()
        copied._lazy = _Lazy()
        return copied

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any:
        """A copy with ``update`` applied through validation (pydantic's skips it: a key
        passed as a plain ``str`` would stay one, and show in ``repr``)."""
        copied = super().model_copy(deep=deep)
        for name, value in (update or {}).items():
            setattr(copied, name, value)
        return copied

    # -- equality: the settings, not the private state -----------------------------------------
    # pydantic's equality also compares private attributes: the lazily built memory (never
    # equal between two instances) and Prefect's document id. Two blocks with the same settings
    # are the same storage, so that Prefect can tell that two cache policies (or a policy and
    # a task) use one storage: ``INPUTS.configure(key_storage=B.load(n)) + TASK_SOURCE...``.
    def _settings(self, *, hashable: bool = False) -> tuple[tuple[str, Any], ...]:
        """``(field, value)`` of every field, in declaration order (see :func:`_comparable`)."""
        fields = type(self).model_fields
        return tuple((n, _comparable(getattr(self, n), hashable=hashable)) for n in fields)

    def __eq__(self, other: object) -> bool:
        """Equal to a block of the same type with equal settings (secrets compared too)."""
        if not isinstance(other, MemoryBlock):
            return NotImplemented
        return type(self) is type(other) and self._settings() == other._settings()

    def __hash__(self) -> int:
        """A hash of the type and the settings, consistent with ``==``."""
        return hash((type(self), self._settings(hashable=True)))

    def close(self) -> None:
        """Release the connections of the memory (it reconnects if used again)."""
        if self._lazy.memory is not None:
            self._lazy.memory.close()

    # -- the memory API, delegated -------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        """Return the value of ``key`` (counting an access), or ``default``."""
        return self.memory.get(key, default)

    def set(
        self,
        key: str,
        value: Any,
        *,
        ttl: TTL = _UNSET,
        tags: Iterable[str] = (),
        refresh: bool | None = None,
    ) -> None:
        """Store ``value`` under ``key`` (``ttl`` defaults to the block's ``ttl``)."""
        self.memory.set(key, value, ttl=ttl, tags=tags, refresh=refresh)

    def exists(self, key: str) -> bool:
        """Tell whether ``key`` has a live entry (does not count an access)."""
        return self.memory.exists(key)

    delete: ClassVar[Any] = _EntryOrBlockDocument(_entry_delete)
    adelete: ClassVar[Any] = _EntryOrBlockDocument(_entry_adelete)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return ``{key: value}`` for the keys that have a live entry."""
        return self.memory.get_many(keys)

    def set_many(
        self,
        entries: Mapping[str, Any],
        *,
        ttl: TTL = _UNSET,
        tags: Iterable[str] = (),
        refresh: bool | None = None,
    ) -> None:
        """Store every item of ``entries`` (one round trip per batch)."""
        self.memory.set_many(entries, ttl=ttl, tags=tags, refresh=refresh)

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete ``keys``; return how many live entries were removed."""
        return self.memory.delete_many(keys)

    # Not ``keys``: a pydantic model with a ``keys`` method becomes a mapping to ``dict()``,
    # and Prefect calls ``dict(model)`` on every pydantic task and flow parameter (its
    # ``visit_collection``), which would then scan the store and index the block.
    def list_keys(self, pattern: str = "*") -> list[str]:
        """Return the keys of the namespace matching the glob ``pattern`` (``Memory.keys``)."""
        return list(self.memory.keys(pattern))

    def invalidate_tags(self, *tags: str | Iterable[str]) -> int:
        """Delete every entry carrying any of ``tags``; return how many were removed."""
        return self.memory.invalidate_tags(*tags)

    def info(self, key: str) -> EntryInfo | None:
        """Return the metadata of ``key`` (``None`` when missing)."""
        return self.memory.info(key)

    def clear(self) -> int:
        """Delete every entry of the namespace; return how many were removed."""
        return self.memory.clear()

    def purge_expired(self) -> int:
        """Remove expired entries a store keeps until cleaned (SQLite, files); return how many.

        Covers the namespace and its cache-key records (``<namespace>/prefect-keys``).
        """
        removed = self.memory.purge_expired()
        if not self._is_key_storage():
            removed += self._keys_memory().purge_expired()
        return removed

    # The memory's own twins (as ``adelete``): native on a store with an async driver.
    async def aget(self, key: str, default: Any = None) -> Any:
        """Async twin of :meth:`get`."""
        return await self.memory.aget(key, default)

    async def aset(
        self,
        key: str,
        value: Any,
        *,
        ttl: TTL = _UNSET,
        tags: Iterable[str] = (),
        refresh: bool | None = None,
    ) -> None:
        """Async twin of :meth:`set`."""
        await self.memory.aset(key, value, ttl=ttl, tags=tags, refresh=refresh)

    async def aexists(self, key: str) -> bool:
        """Async twin of :meth:`exists`."""
        return await self.memory.aexists(key)

    async def aget_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Async twin of :meth:`get_many`."""
        return await self.memory.aget_many(keys)

    async def aset_many(
        self,
        entries: Mapping[str, Any],
        *,
        ttl: TTL = _UNSET,
        tags: Iterable[str] = (),
        refresh: bool | None = None,
    ) -> None:
        """Async twin of :meth:`set_many`."""
        await self.memory.aset_many(entries, ttl=ttl, tags=tags, refresh=refresh)

    async def adelete_many(self, keys: Iterable[str]) -> int:
        """Async twin of :meth:`delete_many`."""
        return await self.memory.adelete_many(keys)

    async def ainvalidate_tags(self, *tags: str | Iterable[str]) -> int:
        """Async twin of :meth:`invalidate_tags`."""
        return await self.memory.ainvalidate_tags(*tags)

    async def ainfo(self, key: str) -> EntryInfo | None:
        """Async twin of :meth:`info`."""
        return await self.memory.ainfo(key)

    aclear = async_twin(clear)
    apurge_expired = async_twin(purge_expired)

    async def alist_keys(self, pattern: str = "*") -> list[str]:
        """Async twin of :meth:`list_keys`."""
        return await self.memory.akeys(pattern)
