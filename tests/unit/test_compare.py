"""Telling a mirror that is only behind its source from one that lost something."""
from __future__ import annotations

from datetime import UTC, datetime

from devtools.compare import compare, explain

MARK = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def entry(kind: str, rid: str, version: str, updated: str, deleted: bool = False) -> dict[str, object]:
    return {"type": kind, "id": rid, "versionId": version, "lastUpdated": updated, "deleted": deleted}


def test_changes_after_the_watermark_are_behind_and_older_ones_lost() -> None:
    snapshot = [entry("Referral", "RF-1", "2", "2026-12-01T10:01:00Z"),  # changed after the mark: behind
                entry("Referral", "RF-2", "1", "2026-12-01T09:00:00Z"),  # before it: should be there
                entry("Patient", "PT-1", "3", "2026-12-01T10:05:00Z", deleted=True),  # deleted since: behind
                entry("Patient", "PT-2", "1", "2026-12-01T08:00:00Z")]
    mirror = {("Referral", "RF-1", "1"), ("Patient", "PT-1", "2"), ("Patient", "PT-2", "1")}
    truth = {("Referral", "RF-1", "2"), ("Referral", "RF-2", "1"), ("Patient", "PT-2", "1")}
    explained = explain(compare(mirror, truth), snapshot, {"Referral": MARK, "Patient": MARK})
    assert explained.behind == {"Referral": 1, "Patient": 1}  # RF-1 counted once, not as lost + unexpected
    assert explained.lost == [("Referral", "RF-2", "1")] and explained.unexpected == []
    assert explained.summary().startswith("behind the source: 1 Patient, 1 Referral")
    assert "lost 1 [('Referral', 'RF-2', '1')]" in explained.summary()


def test_a_type_never_synced_is_behind_and_an_equal_mirror_says_so() -> None:
    snapshot = [entry("Practitioner", "PR-1", "1", "2026-11-01T00:00:00Z")]
    explained = explain(compare(set(), {("Practitioner", "PR-1", "1")}), snapshot, {})
    assert explained.behind == {"Practitioner": 1} and not explained.lost
    assert explain(compare(set(), set()), [], {}).summary() == "equal to the source"
