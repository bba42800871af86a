"""BulkWriter: a stream of one tenant's rows written in batches, one transaction per batch,
with the next batch prepared while the database writes the previous one.

Preparing a batch (records, content hashes, role resolution from an in-memory map) is pure
Python; applying it (lookup, guard, write) mostly waits on the database, and psycopg and
sqlite3 release the GIL while they wait. Running the two in different threads overlaps them:
at most one batch is in flight while the caller fills the next.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from shared.records import MirrorRow
from shared.store.engine import write_transaction
from shared.store.guard import UpsertCounts
from shared.store.mirror import backfill_practitioners, resolve_roles, roles_in, stored_roles
from shared.store.upsert import PreparedBatch, apply_prepared, prepare_rows


class BulkWriter:
    """Use as a context manager, or call close() (commit all) / abort() (drop the unsent batch)."""

    def __init__(self, engine: Engine, tenant_id: str, *, batch_size: int = 1000,
                 on_commit: Callable[[Any], None] | None = None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.engine, self.tenant_id, self.batch_size = engine, tenant_id, batch_size
        self.on_commit = on_commit
        self.counts = UpsertCounts()
        self._rows: list[MirrorRow] = []
        self._marker: Any = None
        with engine.connect() as conn:
            # A tenant has at most a few thousand roles: one read makes resolution pure.
            self._roles: dict[str, str | None] = dict(stored_roles(conn, tenant_id))
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"bulk-{tenant_id}")
        self._in_flight: Future[UpsertCounts] | None = None

    def add(self, row: MirrorRow, marker: Any = None) -> None:
        """Queue a row; ``marker`` (a file location, say) is passed to on_commit with its batch."""
        self._rows.append(row)
        self._marker = marker
        if len(self._rows) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        rows, marker = self._rows, self._marker
        self._rows = []
        new_roles = roles_in(rows)
        self._roles.update(new_roles)
        prepared = prepare_rows(self.tenant_id, resolve_roles(rows, self._roles), now=datetime.now(UTC))
        self._wait()  # one batch in flight at most: memory stays bounded
        self._in_flight = self._executor.submit(self._apply, prepared, new_roles, marker)

    def _apply(self, prepared: PreparedBatch, new_roles: dict[str, str], marker: Any) -> UpsertCounts:
        with write_transaction(self.engine) as conn:
            counts = apply_prepared(conn, prepared)
            if new_roles:
                backfill_practitioners(conn, self.tenant_id, new_roles)
        if self.on_commit is not None:
            self.on_commit(marker)
        return counts

    def _wait(self) -> None:
        if self._in_flight is not None:
            future, self._in_flight = self._in_flight, None
            self.counts += future.result()  # re-raises the worker's error here

    def close(self) -> UpsertCounts:
        """Write what is queued, wait for it, and return the counts of everything written."""
        try:
            self.flush()
            self._wait()
        finally:
            self._executor.shutdown(wait=True)
        return self.counts

    def abort(self) -> UpsertCounts:
        """Drop the rows not yet sent; the batch in flight still commits (it was whole)."""
        self._rows = []
        try:
            self._wait()
        finally:
            self._executor.shutdown(wait=True)
        return self.counts

    def __enter__(self) -> BulkWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
            return
        with contextlib.suppress(Exception):
            self.abort()
