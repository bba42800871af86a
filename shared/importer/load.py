"""The load pipeline: export files -> entries -> rows -> batches -> version-guarded upsert.

A batch is written only once every entry in it has been read and mapped, in one transaction:
malformed input stops the load before its batch is written, so the database holds exactly the
batches before it, and re-running after a fix is safe (the upsert is idempotent). Reading and
mapping the next batch overlaps with writing the previous one (BulkWriter).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from sqlalchemy import Engine

from shared.fhir.transform import TABLE_FOR_TYPE, TransformError, UnsupportedResourceType, transform_resource
from shared.importer.progress import Progress
from shared.importer.readers import Entry, MalformedInput, open_export, read_entries
from shared.records import MirrorRow
from shared.store.bulk import BulkWriter
from shared.store.guard import UpsertCounts

MAX_LISTED_ERRORS = 20


@dataclass
class LoadReport:
    tenant_id: str
    files: int = 0
    entries: int = 0
    counts: UpsertCounts = field(default_factory=UpsertCounts)
    skipped: Counter[str] = field(default_factory=Counter)
    errored: int = 0
    errors: list[str] = field(default_factory=list)
    committed_through: str | None = None

    def add_error(self, location: str, error: TransformError) -> None:
        self.errored += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(f"{location}: {error}")


class LoadAborted(Exception):
    """Malformed input stopped the load; ``report`` says what was committed before it."""

    def __init__(self, error: MalformedInput, report: LoadReport) -> None:
        self.error, self.report = error, report
        super().__init__(str(error))


def load_files(engine: Engine, tenant_id: str, paths: Iterable[Path], *, batch_size: int = 1000,
               progress_stream: TextIO | None = None) -> LoadReport:
    """Load every file in order; raises LoadAborted on malformed input, after earlier batches."""
    report = LoadReport(tenant_id)
    started = datetime.now(UTC)

    def committed(marker: str | None) -> None:
        report.committed_through = marker

    with BulkWriter(engine, tenant_id, batch_size=batch_size, on_commit=committed) as writer:
        try:
            for path in paths:
                report.files += 1
                _load_file(writer, path, started, report, progress_stream)
        except MalformedInput as exc:
            report.counts = writer.abort()  # the batch holding the bad entry is never sent
            raise LoadAborted(exc, report) from None
    report.counts = writer.counts
    return report


def _load_file(writer: BulkWriter, path: Path, started: datetime, report: LoadReport,
               progress_stream: TextIO | None) -> None:
    stream, counter = open_export(path)
    progress = Progress(str(path), path.stat().st_size, stream=progress_stream)
    records = 0
    with stream:
        for entry in read_entries(path, stream, default_deleted_at=started):
            records += 1
            report.entries += 1
            row = _to_row(entry, report)
            if row is not None:
                writer.add(row, marker=f"{path}: {entry.location}")
            if records % writer.batch_size == 0:
                progress.update(records, counter.position)
        progress.update(records, counter.position, final=True)


def _to_row(entry: Entry, report: LoadReport) -> MirrorRow | None:
    if entry.deleted is not None:
        resource_type, resource_id, when = entry.deleted
        table = TABLE_FOR_TYPE.get(resource_type)
        if table is None:
            report.skipped[resource_type] += 1
            return None
        return MirrorRow.tombstone(table, resource_id, when)
    assert entry.resource is not None
    try:
        return transform_resource(entry.resource)
    except UnsupportedResourceType as exc:
        report.skipped[exc.resource_type] += 1
    except TransformError as exc:
        report.add_error(entry.location, exc)
    return None


__all__ = ["LoadAborted", "LoadReport", "load_files"]
