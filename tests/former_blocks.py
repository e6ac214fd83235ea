"""Save a block as an earlier release did: under a schema of its own, with its own data."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import BlockDocumentCreate, BlockSchemaCreate


def save_as_former(
    block: Block,
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    *,
    fields: Callable[[dict[str, Any]], None],
    data: Callable[[dict[str, Any]], dict[str, Any]] = lambda data: data,
) -> Any:
    """Save ``block`` as ``name`` under a former schema; return the saved document.

    ``fields`` edits a copy of today's schema fields into the former ones (drops a field,
    renames the title); ``data`` turns today's document data into what was saved. The
    class's schema and type ids (set by a load) are put back after the test.
    """
    cls = type(block)
    monkeypatch.setattr(cls, "_block_schema_id", cls._block_schema_id)
    monkeypatch.setattr(cls, "_block_type_id", cls._block_type_id)
    slug = cls.get_block_type_slug()
    with get_client(sync_client=True) as client:
        block_type = client.read_block_type_by_slug(slug)
        now = cls._to_block_schema(block_type_id=block_type.id)
        former_fields = copy.deepcopy(now.fields)
        fields(former_fields)
        former = client.create_block_schema(
            BlockSchemaCreate(
                fields=former_fields,
                block_type_id=block_type.id,
                capabilities=now.capabilities,
                version=now.version,
            )
        )
        assert former.checksum != now.checksum
        document = block._to_block_document(
            name=name, block_schema_id=former.id, block_type_id=block_type.id
        )
        client.create_block_document(
            BlockDocumentCreate(
                name=name,
                data=data(dict(document.data)),
                block_schema_id=former.id,
                block_type_id=block_type.id,
            )
        )
        return client.read_block_document_by_name(name, slug)
