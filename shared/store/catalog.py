"""What the store holds, by name, for modules that must not build SQL (a spec's validation)."""
from __future__ import annotations

from shared.store.schema import BOOKKEEPING, MIRRORED_TABLES, content_columns

BUILTIN_TABLES: frozenset[str] = frozenset(MIRRORED_TABLES)
RESERVED_COLUMNS: frozenset[str] = frozenset(BOOKKEEPING) | {"record"}

__all__ = ["BUILTIN_TABLES", "RESERVED_COLUMNS", "content_columns"]
