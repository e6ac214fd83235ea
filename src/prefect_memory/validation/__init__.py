"""Record schemas (JSON Schema) and save/load hooks: validate, encrypt, migrate.

Importing this package is cheap; ``jsonschema`` and ``cryptography`` load with the first
name used from it (``pip install 'prefect-memory[validation]'``).

Example:
    >>> import prefect_memory as pm
    >>> from prefect_memory.validation import RecordSchemas, SchemaHook
    >>> schemas = RecordSchemas({"task": {
    ...     "type": "object", "required": ["id", "status"],
    ...     "properties": {"id": {"type": "string"},
    ...                    "status": {"enum": ["pending", "in_progress", "completed"]}}}})
    >>> mem = pm.open_memory("memory://", hooks=[SchemaHook(schemas)])
    >>> mem.set("task:1", {"id": "1", "status": "pending"})
    >>> mem.set("task:2", {"status": "done"})
    Traceback (most recent call last):
    ...
    prefect_memory.errors.ValidationError: task:2 does not match schema 'task' (2 failures):
      id: required: required property missing
      status: enum: 'done' is not one of ['pending', 'in_progress', 'completed']
"""

from __future__ import annotations

from ..lazy_exports import lazy_exports

_EXPORTS = {
    "RecordSchemas": "records",
    "format_checker": "formats",
    "SchemaHook": "hooks",
    "EncryptionHook": "hooks",
    "MigrationHook": "hooks",
    "FrameSchemaHook": "hooks",
    "hooks_from_config": "config",
    "schema_hook_from_config": "config",
    "PrefectSecretKey": "secrets",
    "generate_key": "secrets",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
