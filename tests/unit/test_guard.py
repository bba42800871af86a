"""The version guard as a pure function: every case of the order, and convergence."""
from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from shared.store.guard import Outcome, StoredVersion, UpsertCounts, decide, version_seq

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def v(minutes: int, seq: int | None = None, digest: str = "a", deleted: bool = False) -> StoredVersion:
    at = T0 + timedelta(minutes=minutes)
    return StoredVersion(at, seq, digest, at if deleted else None)


@pytest.mark.parametrize(("incoming", "stored", "outcome"), [
    (v(0), None, Outcome.INSERTED),
    (v(0, deleted=True), None, Outcome.DELETED),
    (v(1), v(0), Outcome.UPDATED),
    (v(0), v(1), Outcome.STALE),
    (v(0), v(0), Outcome.UNCHANGED),
    (v(0, digest="b"), v(0), Outcome.UPDATED),          # same version, remapped by newer code
    (v(0, 3), v(0, 2), Outcome.UPDATED),                 # same second, higher versionId
    (v(0, 2, "b"), v(0, 3), Outcome.STALE),              # same second, lower versionId
    (v(0, 2), v(0, None), Outcome.UPDATED),              # a number beats no number
    (v(1, deleted=True), v(0), Outcome.DELETED),
    (v(0, deleted=True), v(0), Outcome.DELETED),         # a deletion wins ties
    (v(0, deleted=True), v(1), Outcome.STALE),           # deletion older than the stored version
    (v(5, deleted=True), v(1, deleted=True), Outcome.UNCHANGED),  # already deleted
    (v(2), v(1, deleted=True), Outcome.RESURRECTED),
    (v(1, digest="b"), v(1, deleted=True), Outcome.STALE),  # a live row must be strictly newer
    (v(0), v(1, deleted=True), Outcome.STALE),
])
def test_decide(incoming: StoredVersion, stored: StoredVersion | None, outcome: Outcome) -> None:
    assert decide(incoming, stored) is outcome


@pytest.mark.parametrize(("incoming", "stored", "outcome"), [
    (v(0, 5), v(0, 3), Outcome.UNCHANGED),               # seen again later, the same content: no rewrite
    (v(0, 5, "b"), v(0, 3), Outcome.UPDATED),            # same second, seen later, other content: it wins
    (v(0, 3, "b"), v(0, 5), Outcome.STALE),              # same second, seen earlier: an older copy
    (v(1, 3), v(0, 5), Outcome.UPDATED),                 # a later change time wins whenever it was seen
    (v(0, 5, "b"), v(0, None), Outcome.UPDATED),         # over a row written before rows had a seen time
])
def test_decide_with_seen_ties(incoming: StoredVersion, stored: StoredVersion, outcome: Outcome) -> None:
    """A REST row's version number is when it was seen (shared/rest/mapping.py)."""
    assert decide(incoming, stored, seen_ties=True) is outcome


@pytest.mark.parametrize(("version", "seq"), [("1", 1), ("42", 42), ("W/\"3\"", None), ("abc", None),
                                              (None, None), ("", None), ("9" * 19, None)])
def test_version_seq(version: str | None, seq: int | None) -> None:
    assert version_seq(version) == seq


def apply(stored: StoredVersion | None, incoming: StoredVersion) -> StoredVersion | None:
    outcome = decide(incoming, stored)
    if outcome in (Outcome.UNCHANGED, Outcome.STALE):
        return stored
    return incoming


def test_any_delivery_order_converges_to_the_newest_version() -> None:
    """Every permutation of a version history ends in the same stored version: the newest."""
    history = [v(0, 1), v(1, 2, "b"), v(1, 3, "c"), v(2, 4, "d"), v(3, deleted=True)]
    results = set()
    for order in itertools.permutations(history):
        stored = None
        for incoming in order:
            stored = apply(stored, incoming)
        results.add(stored)
    assert results == {history[-1]}


def test_random_histories_with_duplicates_converge() -> None:
    rng = random.Random(11)
    for _ in range(300):
        history = [v(m, s, f"h{m}-{s}") for m, s in sorted({(rng.randrange(5), rng.randrange(4)) for _ in range(6)})]
        newest = max(history, key=lambda x: (x.updated_at, x.version_seq))
        deliveries = history * 2
        rng.shuffle(deliveries)
        stored = None
        for incoming in deliveries:
            stored = apply(stored, incoming)
        assert stored == newest


def test_counts_add_up() -> None:
    counts = UpsertCounts()
    counts.add(Outcome.INSERTED, 3)
    counts.add(Outcome.STALE)
    other = UpsertCounts(updated=2, deleted=1)
    counts += other
    assert counts.as_dict() == {"inserted": 3, "updated": 2, "unchanged": 0, "stale": 1, "deleted": 1, "resurrected": 0}
    assert counts.total == 7
