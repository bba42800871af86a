"""Streaming readers for FHIR exports: Bundles (any type) and NDJSON (Bulk Data), plain or gzip.

Memory stays flat: NDJSON is read a line at a time, and a Bundle's entries are built one at a
time by ijson while the rest of the document streams past. Errors never quote the input (it is
patient data): they give the file, the entry or line number, and what is wrong.
"""
from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

import ijson


class MalformedInput(ValueError):
    """The file cannot be read as FHIR: names the file and the entry/line, never its content."""

    def __init__(self, path: Path, location: str, reason: str) -> None:
        self.path, self.location, self.reason = path, location, reason
        super().__init__(f"{path}: {location}: {reason}")


@dataclass(frozen=True, slots=True)
class Entry:
    """One resource to upsert, or one deletion (``deleted`` = (type, id, when))."""

    location: str
    resource: dict[str, Any] | None = None
    deleted: tuple[str, str, datetime] | None = None


class CountingReader:
    """Wraps a binary file to report how many bytes of the (compressed) file were consumed."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw

    @property
    def position(self) -> int:
        return self.raw.tell()


def open_export(path: Path) -> tuple[IO[bytes], CountingReader]:
    raw = path.open("rb")
    counter = CountingReader(raw)
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")), counter  # a binary file, as typeshed does not say
    return raw, counter


def is_ndjson(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    return bool(suffixes) and suffixes[-1] in (".ndjson", ".jsonl")


def read_entries(path: Path, stream: IO[bytes], *, default_deleted_at: datetime) -> Iterator[Entry]:
    if is_ndjson(path):
        return _ndjson_entries(path, stream)
    return _json_entries(path, stream, default_deleted_at)


def _ndjson_entries(path: Path, stream: IO[bytes]) -> Iterator[Entry]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        location = f"line {number}"
        try:
            resource = json.loads(line)
        except UnicodeDecodeError:
            raise MalformedInput(path, location, "not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise MalformedInput(path, location, f"invalid JSON at column {exc.colno} ({exc.msg})") from None
        yield Entry(location, resource=_require_resource(path, location, resource))


def _require_resource(path: Path, location: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedInput(path, location, "expected a JSON object (a FHIR resource)")
    if not isinstance(value.get("resourceType"), str):
        raise MalformedInput(path, location, "not a FHIR resource: no resourceType")
    return value


def _json_entries(path: Path, stream: IO[bytes], default_deleted_at: datetime) -> Iterator[Entry]:
    """A Bundle's entries one by one, or a single resource when the document is not a Bundle."""
    events = ijson.parse(stream, use_float=True)
    top = ijson.ObjectBuilder()
    index, inside = 0, False  # inside: entry ``index`` has started and not yet ended
    try:
        for prefix, event, value in events:
            if prefix == "" and event != "start_map" and top.value is None:
                raise MalformedInput(path, "document", "expected a JSON object (a Bundle or a resource)")
            if prefix == "entry" and event not in ("start_array", "end_array"):
                raise MalformedInput(path, "document", "Bundle.entry must be an array")
            if prefix == "entry.item" and event != "start_map":
                raise MalformedInput(path, f"entry {index + 1}", "expected a JSON object (a Bundle entry)")
            if prefix == "entry.item" and event == "start_map":
                index += 1
                kind = top.value.get("resourceType") if isinstance(top.value, dict) else None
                if kind not in (None, "Bundle"):
                    raise MalformedInput(path, f"entry {index}", f"a {kind} cannot have entries")
                inside = True
                entry = _build_object(events)
                inside = False
                yield _bundle_entry(path, index, entry, top.value, default_deleted_at)
                continue
            top.event(event, value)
    except ijson.JSONError:
        where = f"entry {index}" if inside else f"after entry {index}" if index else "document"
        raise MalformedInput(path, where, "invalid JSON (truncated or corrupt)") from None
    except UnicodeDecodeError:
        raise MalformedInput(path, "document", "not UTF-8 text") from None
    document = top.value
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        raise MalformedInput(path, "document", "not a FHIR resource or Bundle: no resourceType")
    if document["resourceType"] != "Bundle":
        yield Entry("document", resource=document)


def _build_object(events: Iterator[tuple[str, str, Any]]) -> Any:
    builder = ijson.ObjectBuilder()
    builder.event("start_map", None)
    depth = 1
    for _prefix, event, value in events:
        builder.event(event, value)
        if event in ("start_map", "start_array"):
            depth += 1
        elif event in ("end_map", "end_array"):
            depth -= 1
            if depth == 0:
                return builder.value
    raise ijson.IncompleteJSONError("document ended inside an entry")


def _bundle_entry(path: Path, index: int, entry: Any, bundle: Any, default_deleted_at: datetime) -> Entry:
    location = f"entry {index}"
    request = entry.get("request") if isinstance(entry.get("request"), dict) else {}
    if request.get("method") == "DELETE":
        return Entry(location, deleted=_deletion(path, location, entry, request, bundle, default_deleted_at))
    if "resource" not in entry:
        raise MalformedInput(path, location, "entry has neither a resource nor a DELETE request")
    return Entry(location, resource=_require_resource(path, location, entry["resource"]))


def _deletion(path: Path, location: str, entry: dict[str, Any], request: dict[str, Any], bundle: Any,
              default_deleted_at: datetime) -> tuple[str, str, datetime]:
    parts = [p for p in str(request.get("url", "")).split("?")[0].split("/") if p]
    if len(parts) < 2:
        raise MalformedInput(path, location, "DELETE request.url is not Type/id")
    resource_type, resource_id = parts[-2], parts[-1]
    raw_response = entry.get("response")
    response: dict[str, Any] = raw_response if isinstance(raw_response, dict) else {}
    # When the deletion happened: the history entry's lastModified, else the Bundle's
    # timestamp, else the start of this load (a deletion observed now).
    for candidate in (response.get("lastModified"), bundle.get("timestamp") if isinstance(bundle, dict) else None):
        if isinstance(candidate, str):
            try:
                when = datetime.fromisoformat(candidate.replace("Z", "+00:00"))
            except ValueError:
                raise MalformedInput(path, location, "deletion time is not an instant") from None
            return resource_type, resource_id, (when if when.tzinfo else when.replace(tzinfo=UTC))
    return resource_type, resource_id, default_deleted_at
