"""The sandbox's data: resources by type, ordered by lastUpdated, with versions and deletions.

Thread-safe (one lock); each resource is kept with its JSON encoding so pages are assembled
from bytes. Search results are ordered by (lastUpdated, id), as a FHIR server's default sort
may be, which makes paging stable while nothing changes.
"""
from __future__ import annotations

import bisect
import json
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from devtools.sandbox.search import BadRequest, date_range
from devtools.synthetic import (
    PARTICIPANT_STATUS_URL,
    SyntheticCounts,
    appointment_id,
    generate,
    invoice_id,
    patient_id,
    referral_id,
)
from shared.records import RESOURCE_TYPES

TYPES = RESOURCE_TYPES


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Stored:
    resource: dict[str, Any]
    encoded: bytes
    updated: datetime
    version: int
    deleted_at: datetime | None = None


@dataclass(frozen=True)
class Change:
    type: str
    id: str
    action: str  # create | update | delete
    version: int
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id, "action": self.action, "versionId": str(self.version),
                "lastUpdated": _instant(self.at)}


class SandboxData:
    def __init__(self, counts: SyntheticCounts, *, seed: int = 1, anchor: datetime | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
        self.lock = threading.RLock()
        self.rng = random.Random(seed * 7919)
        self.by_type: dict[str, dict[str, Stored]] = {t: {} for t in TYPES}
        self.order: dict[str, list[tuple[datetime, str]]] = {t: [] for t in TYPES}
        self.counts = counts
        self._next_id = {"Patient": counts.patients, "Appointment": counts.appointments, "Invoice": counts.invoices,
                         "Referral": counts.referral_count}
        for resource in generate(counts, seed=seed, anchor=anchor):
            meta = resource["meta"]
            self._put(resource, _parse_time(meta["lastUpdated"]), int(meta["versionId"]))
        for kind in TYPES:
            self.order[kind].sort()

    # -- storage ---------------------------------------------------------------------------
    def write(self, resource: dict[str, Any], updated: datetime, version: int) -> Stored:
        """Store a resource as the source would hold it, at ``updated`` with ``version`` (a test
        sets up a source's state this way: an edit that bypasses churn, a clock skew)."""
        return self._put(resource, updated, version, index=True)

    def _put(self, resource: dict[str, Any], updated: datetime, version: int, *, index: bool = False) -> Stored:
        kind, rid = resource["resourceType"], resource["id"]
        resource["meta"] = {"versionId": str(version), "lastUpdated": _instant(updated)}
        stored = Stored(resource, json.dumps(resource, separators=(",", ":")).encode(), updated, version)
        previous = self.by_type[kind].get(rid)
        if index and previous is not None and previous.deleted_at is None:
            self.order[kind].remove((previous.updated, rid))
        self.by_type[kind][rid] = stored
        if index:
            bisect.insort(self.order[kind], (updated, rid))
        else:
            self.order[kind].append((updated, rid))
        return stored

    def read(self, kind: str, rid: str) -> Stored | None:
        with self.lock:
            return self.by_type.get(kind, {}).get(rid)

    # -- search ----------------------------------------------------------------------------
    def search(self, kind: str, params: dict[str, list[str]], offset: int = 0,
               limit: int | None = None) -> tuple[int, list[Stored]]:
        """(total matches, the live matches from ``offset``, at most ``limit``), in (lastUpdated, id) order."""
        if kind not in self.by_type:
            raise BadRequest(f"unknown resource type {kind!r}")
        lo, hi = date_range(params.get("_lastUpdated", []))
        by_start = kind == "Appointment" and bool(params.get("date"))
        start_lo, start_hi = date_range(params.get("date", []) if by_start else [])
        ids = {i for v in params.get("_id", []) for i in v.split(",") if i}
        with self.lock:
            order = self.order[kind]
            first, last = bisect.bisect_left(order, (lo, "")), bisect.bisect_left(order, (hi, ""))
            if not ids and not by_start:  # a range of the sorted index: no scan
                window = order[first + offset: last if limit is None else min(last, first + offset + limit)]
                return max(last - first, 0), [self.by_type[kind][rid] for _at, rid in window]
            found = []
            for _at, rid in order[first:last]:
                if ids and rid not in ids:
                    continue
                stored = self.by_type[kind][rid]
                if by_start and not start_lo <= _parse_time(stored.resource["start"]) < start_hi:
                    continue
                found.append(stored)
            end_at = None if limit is None else offset + limit
            return len(found), found[offset:end_at]

    # -- changes ---------------------------------------------------------------------------
    def churn(self, creates: int = 0, updates: int = 0, deletes: int = 0) -> list[Change]:
        """Mutate like a busy practice: new appointments/patients/invoices, status changes, deletions."""
        changes: list[Change] = []
        with self.lock:
            for _ in range(creates):
                changes.append(self._create(self.rng.choice(("Appointment", "Appointment", "Patient", "Invoice"))))
            for _ in range(updates):
                change = self._update()
                if change:
                    changes.append(change)
            for _ in range(deletes):
                change = self._delete()
                if change:
                    changes.append(change)
        return changes

    def _now_after(self, kind: str) -> datetime:
        # Strictly increasing per type, so each change has its own lastUpdated.
        now = self.clock()
        order = self.order[kind]
        if order and order[-1][0] >= now:
            now = order[-1][0] + timedelta(milliseconds=1)
        return now

    def _create(self, kind: str) -> Change:
        n = self._next_id[kind]
        self._next_id[kind] += 1
        template_id = {"Patient": patient_id, "Appointment": appointment_id, "Invoice": invoice_id,
                       "Referral": referral_id}[kind]
        live = [s for s in self.by_type[kind].values() if s.deleted_at is None]
        source = json.loads(self.rng.choice(live).encoded) if live else None
        if source is None:
            raise ValueError(f"no {kind} to model a new one on")
        source["id"] = template_id(n)
        at = self._now_after(kind)
        self._put(source, at, 1, index=True)
        return Change(kind, source["id"], "create", 1, at)

    def _live(self, kinds: Iterable[str]) -> list[tuple[str, Stored]]:
        return [(k, s) for k in kinds for s in self.by_type[k].values() if s.deleted_at is None]

    def _update(self) -> Change | None:
        kind = self.rng.choice(("Appointment", "Appointment", "Patient", "Invoice", "Referral"))
        candidates = [s for s in self.by_type[kind].values() if s.deleted_at is None]
        if not candidates:
            return None
        return self._revise(kind, self.rng.choice(candidates))

    def revise(self, kind: str, rid: str) -> Change:
        """A new version of one live record (the fault harness changes one key many times)."""
        with self.lock:
            stored = self.by_type[kind][rid]
            if stored.deleted_at is not None:
                raise ValueError(f"{kind}/{rid} is deleted")
            return self._revise(kind, stored)

    def first_live(self, kind: str) -> str:
        with self.lock:
            return min(rid for rid, s in self.by_type[kind].items() if s.deleted_at is None)

    def _revise(self, kind: str, stored: Stored) -> Change:
        resource = json.loads(stored.encoded)
        if kind == "Appointment":
            code = self.rng.choice(("attended", "cancelled", "did-not-attend", "confirmed"))
            resource["status"] = "cancelled" if code == "cancelled" else "booked"
            for participant in resource["participant"]:
                for ext in participant.get("extension", []):
                    if ext["url"] == PARTICIPANT_STATUS_URL:
                        ext["valueCode"] = code
        elif kind == "Patient":
            resource["telecom"][0]["value"] = f"04{self.rng.randrange(10**8):08d}"
        elif kind == "Referral":  # an adjusted count of prior appointments, or a renewed limit
            resource["extension"][self.rng.randrange(2)]["valueInteger"] = self.rng.randrange(0, 11)
        else:
            resource["status"] = self.rng.choice(("active", "issued", "write-off"))
        at = self._now_after(kind)
        self._put(resource, at, stored.version + 1, index=True)
        return Change(kind, resource["id"], "update", stored.version + 1, at)

    def _delete(self) -> Change | None:
        kind = self.rng.choice(("Appointment", "Invoice", "Patient"))
        candidates = [s for s in self.by_type[kind].values() if s.deleted_at is None]
        if not candidates:
            return None
        stored = self.rng.choice(candidates)
        at = self._now_after(kind)
        self.order[kind].remove((stored.updated, stored.resource["id"]))
        stored.deleted_at, stored.updated, stored.version = at, at, stored.version + 1
        return Change(kind, stored.resource["id"], "delete", stored.version, at)

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return [{"type": kind, "id": rid, "versionId": str(s.version), "lastUpdated": _instant(s.updated),
                     "deleted": s.deleted_at is not None}
                    for kind in TYPES for rid, s in sorted(self.by_type[kind].items())]

