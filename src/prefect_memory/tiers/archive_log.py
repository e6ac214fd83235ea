"""Moved to :mod:`prefect_memory.plugins.parquet.log`; this path stays for old imports."""

from __future__ import annotations

from ..plugins.parquet.log import (
    LOG_DIR,
    MAX_CLAIM_BYTES,
    Claim,
    Entry,
    LogView,
    check_claim_size,
    is_logged,
    name_seq,
    overtaken,
    parse_slot,
    slot_name,
)

__all__ = [
    "LOG_DIR",
    "MAX_CLAIM_BYTES",
    "Claim",
    "Entry",
    "LogView",
    "check_claim_size",
    "is_logged",
    "name_seq",
    "overtaken",
    "parse_slot",
    "slot_name",
]
