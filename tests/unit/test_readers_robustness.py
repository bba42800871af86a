"""Corrupted exports: the readers and transformers fail only with their own typed errors."""
from __future__ import annotations

import contextlib
import io
import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devtools.synthetic import SyntheticCounts, generate
from shared.fhir.transform import TransformError, transform_resource
from shared.importer.readers import MalformedInput, read_entries

NOW = datetime(2026, 1, 1, tzinfo=UTC)
RESOURCES = list(generate(SyntheticCounts(2, 6, 12, 6), seed=8))
NDJSON = "".join(json.dumps(r) + "\n" for r in RESOURCES).encode()
BUNDLE = json.dumps({"resourceType": "Bundle", "type": "collection",
                     "entry": [{"resource": r} for r in RESOURCES]}).encode()


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        if not buf:
            break
        kind, at = rng.randrange(4), rng.randrange(len(buf))
        if kind == 0:
            buf[at] = rng.randrange(256)
        elif kind == 1:
            del buf[at:at + rng.randrange(1, 40)]
        elif kind == 2:
            buf[at:at] = rng.choice([b"{", b"}", b"[", b"]", b'"', b",", b"null", b"\xff", b"1e999", b'{"a":'])
        else:
            buf = buf[:at]  # truncated download
    return bytes(buf)


def consume(name: str, data: bytes) -> None:
    for entry in read_entries(Path(name), io.BytesIO(data), default_deleted_at=NOW):
        if entry.resource is not None:
            with contextlib.suppress(TransformError):
                transform_resource(entry.resource)


@pytest.mark.parametrize(("name", "data"), [("x.ndjson", NDJSON), ("x.json", BUNDLE)])
def test_random_corruptions_raise_only_typed_errors(name: str, data: bytes) -> None:
    rng = random.Random(name)
    outcomes = {"ok": 0, "malformed": 0}
    for _ in range(400):
        try:
            consume(name, mutate(data, rng))
            outcomes["ok"] += 1
        except MalformedInput as exc:
            assert exc.path == Path(name) and exc.location
            outcomes["malformed"] += 1
    assert outcomes["malformed"] > 50  # the mutations did break things, and were caught
