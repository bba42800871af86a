"""Tables REST specs declare: defined from the spec, created and extended by ``migrate``.

A declared table has the built-in tables' bookkeeping columns (tenant, source id, version,
updated-at, content hash, deleted_at, last synced), a column per mapped field (its type follows
from the field's conversion) and ``record``, the whole record as JSON, so nothing the source sent
is lost when a field has no column. ``migrate`` creates a missing table and adds missing
columns; it never drops or changes one (a column whose declared type changed is reported).
The writer finds a declared table here, once ``declare`` has seen its spec.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Date,
    Engine,
    MetaData,
    Numeric,
    Table,
    Unicode,
    UnicodeText,
    inspect,
    select,
    tuple_,
)

from shared.records import MirrorRow
from shared.rest.spec import ColumnMap, DeclaredTable, SourceSpec
from shared.settings_errors import SettingsError
from shared.source.errors import DuplicateKeys
from shared.store.schema import ID, MIRRORED_TABLES, metadata, mirrored_table
from shared.store.types import UTCDateTime

DEFAULT_LENGTH = 400
_lock = threading.Lock()
_meta = MetaData(naming_convention=metadata.naming_convention)
_tables: dict[str, Table] = {}
_signatures: dict[str, tuple[Any, ...]] = {}


class TableConflict(SettingsError):
    """Two specs declare one table with different columns: a configuration mistake."""


def column_type(mapping: ColumnMap) -> Any:
    kind = mapping.type
    if kind == "enum":
        values = [v for v in (mapping.values or {}).values() if v is not None] + (
            [mapping.default] if mapping.default is not None else [])
        if values and all(isinstance(v, bool) for v in values):
            return Boolean()
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return BigInteger()
        return Unicode(mapping.length or 100)
    return {
        "string": lambda: Unicode(mapping.length or DEFAULT_LENGTH), "integer": BigInteger,
        "decimal": lambda: Numeric(28, 10), "date": Date, "datetime": UTCDateTime, "boolean": Boolean,
        "initials": lambda: Unicode(8), "link-id": lambda: ID, "json": UnicodeText,
    }[kind]()


def _definition(columns: dict[str, ColumnMap]) -> tuple[Column[Any], ...]:
    return (*(Column(column, column_type(m)) for column, m in columns.items()), Column("record", UnicodeText))


def declare(specs: Iterable[SourceSpec]) -> list[Table]:
    """Make the specs' declared tables known to the store; returns them. Idempotent; a spec that
    changed since (a new file version) replaces its tables' definitions, but two of the specs
    given here declaring one table differently is a configuration mistake."""
    declared: dict[str, Table] = {}
    claimed: dict[str, tuple[str, tuple[Any, ...]]] = {}
    with _lock:
        for spec in specs:
            for entity in spec.entities:
                if not isinstance(entity.table, DeclaredTable):
                    continue
                name = entity.table.name
                signature = tuple((c, m.type, m.length, tuple(sorted((m.values or {}).items(), key=str)))
                                  for c, m in sorted(entity.columns.items()))
                earlier = claimed.setdefault(name, (spec.name, signature))
                if earlier[1] != signature:
                    raise TableConflict(f"table {name}: declared with different columns by the specs {earlier[0]} "
                                        f"and {spec.name}; give one of them another table name")
                if _signatures.get(name) != signature:
                    if name in _tables:
                        _meta.remove(_tables[name])
                    _tables[name] = mirrored_table(name, *_definition(entity.columns), meta=_meta)
                    _signatures[name] = signature
                declared[name] = _tables[name]
    return list(declared.values())


def declared_table(name: str) -> Table | None:
    return _tables.get(name)


def declared_names() -> list[str]:
    with _lock:
        return list(_tables)


def find_table(name: str) -> Table:
    """A mirrored table by name: built in, or declared by a spec seen by ``declare``."""
    table = MIRRORED_TABLES.get(name)
    if table is None:
        table = _tables.get(name)
    if table is None:
        raise ValueError(f"not a mirrored table: {name!r} (a table a spec declares is known once its spec is "
                         "declared: shared.store.declared.declare)")
    return table


def ensure_tables(engine: Engine, tables: Iterable[Table], report: Any = print) -> list[str]:
    """Create missing declared tables and add missing columns (never drop or alter). Returns
    what was done, one line each; ``report`` hears of columns whose type no longer matches."""
    done: list[str] = []
    with engine.begin() as conn:
        inspector = inspect(conn)
        operations = Operations(MigrationContext.configure(conn))
        for table in tables:
            if not inspector.has_table(table.name):
                table.create(conn)
                done.append(f"created table {table.name}")
                continue
            existing = {c["name"]: c for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in existing:
                    operations.add_column(table.name, Column(column.name, column.type, nullable=True))
                    done.append(f"added column {table.name}.{column.name}")
                elif _family(existing[column.name]["type"]) != _family(column.type):
                    report(f"warning: {table.name}.{column.name} is {existing[column.name]['type']} in the database "
                           f"but {column.type} in the spec; left as it is (migrate never changes a column)")
    return done


def _family(column_type: Any) -> str:
    """The Python type a column holds: what must agree between the database and the spec."""
    if isinstance(column_type, UTCDateTime):
        return "datetime"
    try:
        return str(column_type.python_type.__name__)
    except NotImplementedError:
        return type(column_type).__name__


def repeated_keys(conn: Connection, tenant_id: str, rows: list[MirrorRow], columns: tuple[str, ...],
                  limit: int = 5) -> tuple[int, list[str]]:
    """Values of ``columns`` that ``rows`` would make repeat among the tenant's live rows: two
    live rows of the batch, or one of them and a stored live row of another record (a record of
    the batch is judged by its new values, so a code moving between two records of one batch is
    not a repeat). Rows missing a value are not constrained (as SQL's UNIQUE). Returns how many
    values repeat and up to ``limit`` descriptions (values and source ids)."""
    if not columns or not rows:
        return 0, []
    table = find_table(rows[0].table)
    batch = {row.source_id for row in rows}
    holders: dict[tuple[Any, ...], set[str]] = {}
    for row in rows:
        key = tuple(row.content.get(column) for column in columns)
        if not row.is_tombstone and None not in key:
            holders.setdefault(key, set()).add(row.source_id)
    keys = list(holders)
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        match = (table.c[columns[0]].in_([k[0] for k in chunk]) if len(columns) == 1
                 else tuple_(*(table.c[c] for c in columns)).in_(chunk))
        for source_id, *values in conn.execute(select(table.c.source_id, *(table.c[c] for c in columns)).where(
                table.c.tenant_id == tenant_id, table.c.deleted_at.is_(None), match)):
            key = tuple(values)
            if source_id not in batch and key in holders:
                holders[key].add(source_id)
    repeated = sorted((key, sorted(ids)) for key, ids in holders.items() if len(ids) > 1)
    return len(repeated), [", ".join(f"{c}={v!r}" for c, v in zip(columns, key, strict=True)) + " on "
                           + " and ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
                           for key, ids in repeated[:limit]]


def unique_columns(tenant: Any, entity: str) -> tuple[str, ...]:
    """The columns a REST tenant's spec says must not repeat in ``entity``'s table."""
    return () if tenant.is_fhir else tenant.rest_spec().entity(entity).unique


def refuse_repeats(conn: Connection, tenant_id: str, entity: str, rows: list[MirrorRow], columns: tuple[str, ...],
                   consequence: str) -> None:
    """Raise DuplicateKeys when ``rows`` would repeat ``columns`` (repeated_keys)."""
    count, examples = repeated_keys(conn, tenant_id, rows, columns)
    if count:
        raise DuplicateKeys(tenant_id, f"{entity}: {count} value{'s' if count > 1 else ''} of {', '.join(columns)} "
                            f"(unique in the spec) on more than one record: {'; '.join(examples)}"
                            f"{'; …' if count > len(examples) else ''}. {consequence}; the sync stays blocked "
                            "until the source fixes them")
