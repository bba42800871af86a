"""The read endpoints — dashboard and health — on both databases, called as the Functions host does."""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import azure.functions as func
import pytest
from sqlalchemy import Engine, insert

from shared.queues.memory import InMemoryQueues
from shared.reads.dashboard import practitioner_dashboard
from shared.settings import TenantConfig
from shared.store.engine import write_transaction
from shared.store.schema import clients, invoices, practitioners, referrals, sessions, sync_runs
from tests.fakes import installed_runtime, registered_functions

TENANTS = [
    {"id": "syd", "name": "Sydney", "timezone": "Australia/Sydney", "fhir_base_url": "http://127.0.0.1:9/main",
     "client_id": "c", "client_secret": "s"},
    {"id": "other", "name": "Other", "timezone": "UTC", "fhir_base_url": "http://127.0.0.1:9/main",
     "client_id": "c", "client_secret": "s"},
]
SYD = TenantConfig.model_validate(TENANTS[0])
DAY = date(2026, 3, 4)  # AEDT, UTC+11
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=SYD.zone).astimezone(UTC)


def put(conn: Any, table: Any, tenant: str, source_id: str, **values: Any) -> None:
    conn.execute(insert(table).values(tenant_id=tenant, source_id=source_id, source_updated_at=T0,
                                      content_hash="0" * 32, last_synced_at=T0, **values))


def session(conn: Any, tenant: str, sid: str, start: datetime, status: str, client: str | None = "PT-A",
            practitioner: str = "PR-1") -> None:
    put(conn, sessions, tenant, sid, practitioner_id=practitioner, client_id=client, start_at=start,
        end_at=start + timedelta(minutes=50), status=status, service="Consult")


@pytest.fixture
def seeded(database_url: str, tmp_path: Path) -> Iterator[Engine]:
    with installed_runtime(database_url, tmp_path, TENANTS, InMemoryQueues()) as rt:
        with write_transaction(rt.engine) as conn:
            for tenant in ("syd", "other"):  # the same ids in both tenants: isolation must hold
                put(conn, practitioners, tenant, "PR-1", display_name=f"Dr {tenant}", active=True)
                put(conn, clients, tenant, "PT-A", given_name="Alice", family_name="Brown", initials="AB")
                put(conn, clients, tenant, "PT-B", given_name="Carol", family_name="Davis", initials="CD")
            put(conn, practitioners, "syd", "PR-GONE", display_name="Dr Gone", deleted_at=T0)
            put(conn, practitioners, "other", "PR-ONLY-OTHER", display_name="Dr Other")
            # Alice's history: two held, one cancelled (not counted), then today at 09:00.
            session(conn, "syd", "AP-1", local(date(2026, 2, 2), 9), "attended")
            session(conn, "syd", "AP-2", local(date(2026, 2, 9), 9), "cancelled")
            session(conn, "syd", "AP-3", local(date(2026, 2, 16), 9), "attended", practitioner="PR-2")
            session(conn, "syd", "AP-4", local(DAY, 9), "attended")
            # 23:30 Sydney is 12:30 UTC the same day; 00:30 the next day is 13:30 UTC *this* day.
            session(conn, "syd", "AP-5", local(DAY, 23, 30), "booked", client="PT-B")
            session(conn, "syd", "AP-6", local(DAY + timedelta(days=1), 0, 30), "booked", client="PT-B")
            session(conn, "syd", "AP-7", local(DAY - timedelta(days=1), 23, 30), "no_show", client="PT-B")
            session(conn, "syd", "AP-8", local(DAY, 12), "cancelled", client="PT-B")
            # Another tenant: 10:00 UTC is 21:00 in Sydney, inside the Sydney day too.
            session(conn, "other", "AP-X", datetime(2026, 3, 4, 10, tzinfo=UTC), "booked")
            for iid, issued, status, gross, currency in [
                    ("IN-1", local(DAY, 10), "paid", "150.00", "AUD"),
                    ("IN-2", local(date(2026, 3, 2), 10), "issued", "99.50", "AUD"),
                    ("IN-3", local(DAY, 11), "cancelled", "500.00", "AUD"),
                    ("IN-4", local(date(2026, 2, 27), 10), "paid", "80.00", "AUD")]:  # February
                put(conn, invoices, "syd", iid, practitioner_id="PR-1", client_id="PT-A", issued_at=issued,
                    status=status, total_gross=Decimal(gross), currency=currency)
            put(conn, invoices, "other", "IN-1", practitioner_id="PR-1", issued_at=local(DAY, 10), status="paid",
                total_gross=Decimal("1000.00"), currency="AUD")
            # Care plans. Alice: a plan with PR-1 that started with 2 prior sessions, and a revoked
            # one that must be ignored. Carol: a used-up preferred plan, a plan from today and an
            # expired one. The other tenant has a plan with the same id for its own Alice.
            for tenant, rid, client, limit, prior, first, last, extra in [
                    ("syd", "RF-1", "PT-A", 10, 2, date(2026, 2, 1), date(2026, 12, 31), {"practitioner_id": "PR-1"}),
                    ("syd", "RF-REVOKED", "PT-A", 5, 0, None, None, {"status": "revoked", "preferred": True}),
                    ("syd", "RF-2", "PT-B", 1, 1, date(2026, 1, 1), None, {"preferred": True}),
                    ("syd", "RF-3", "PT-B", 6, 0, DAY, DAY + timedelta(days=365), {}),
                    ("syd", "RF-OLD", "PT-B", 10, 0, None, DAY - timedelta(days=1), {"preferred": True}),
                    ("other", "RF-1", "PT-A", 99, 50, None, None, {})]:
                put(conn, referrals, tenant, rid, client_id=client, session_limit=limit, prior_sessions=prior,
                    starts_on=first, ends_on=last, name="Mental Health Treatment Plan",
                    **{"status": "active", "preferred": False, **cast(dict[str, Any], extra)})
        yield rt.engine


def get(route: str, params: dict[str, str] | None = None, **route_params: str) -> tuple[int, dict[str, Any]]:
    name = {"dashboard": "practitioner_dashboard", "health": "health", "practitioners": "practitioners"}[route]
    request = func.HttpRequest("GET", f"http://localhost/api/{route}", body=b"", params=params or {},
                               route_params=route_params)
    response = registered_functions()[name].get_user_function()(request)
    return response.status_code, json.loads(response.get_body())


def test_a_practitioners_day_in_the_tenants_timezone(seeded: Engine) -> None:
    now = local(DAY, 13)
    with seeded.connect() as conn:
        board = practitioner_dashboard(conn, SYD, "PR-1", DAY, now)
    assert board is not None
    assert [s["id"] for s in board["sessions"]] == ["AP-4", "AP-8", "AP-5"]  # start order, the Sydney day only
    first, cancelled, late = board["sessions"]
    assert first["start"] == "2026-03-04T09:00:00+11:00" and first["clientInitials"] == "AB"
    assert first["sessionNumber"] == 3  # AP-1 and AP-3 (another practitioner) counted, AP-2 cancelled not
    assert late["start"] == "2026-03-04T23:30:00+11:00" and late["sessionNumber"] == 1
    assert cancelled["status"] == "cancelled" and cancelled["sessionNumber"] is None
    # Alice's plan with PR-1: 2 prior + AP-1 + today; AP-3 was with PR-2, AP-2 cancelled.
    assert first["carePlan"] == {"referral": "RF-1", "name": "Mental Health Treatment Plan", "sessionsUsed": 4,
                                 "sessionsTotal": 10, "validUntil": "2026-12-31"}
    # Carol: yesterday's no-show fell under the used-up RF-2 (RF-3 starts today, RF-OLD ended
    # yesterday); today RF-3 applies. The cancellation uses no session, the 23:30 booking the first.
    assert cancelled["carePlan"]["referral"] == "RF-3" and cancelled["carePlan"]["sessionsUsed"] == 0
    assert late["carePlan"] == {"referral": "RF-3", "name": "Mental Health Treatment Plan", "sessionsUsed": 1,
                                "sessionsTotal": 6, "validUntil": "2027-03-04"}
    text = json.dumps(board)
    assert "Alice" not in text and "Brown" not in text and "Carol" not in text  # initials only
    week, month = board["stats"]["week"], board["stats"]["month"]
    # Week of Mon 2 March: held AP-4; cancelled AP-8; no-show AP-7 (Tue 3rd); booked ahead AP-5, AP-6.
    assert (week["sessionsHeld"], week["cancellations"], week["noShows"], week["upcoming"]) == (1, 1, 1, 2)
    # Bounds in the practice's zone, like its sessions: Monday midnight in Sydney, not 13:00 UTC.
    assert (week["from"], week["to"]) == ("2026-03-02T00:00:00+11:00", "2026-03-09T00:00:00+11:00")
    assert (month["from"], month["to"]) == ("2026-03-01T00:00:00+11:00", "2026-04-01T00:00:00+11:00")
    assert week["revenue"] == [{"currency": "AUD", "amount": "249.50"}]  # IN-1 + IN-2, not the cancelled IN-3
    assert month["revenue"] == [{"currency": "AUD", "amount": "249.50"}]  # IN-4 was February
    assert board["stats"]["upcoming"] == {"booked": 2, "next7Days": 2}
    with seeded.connect() as conn:  # Sunday 1 March: its week (from 23 Feb) reaches into February
        sunday = practitioner_dashboard(conn, SYD, "PR-1", date(2026, 3, 1), now)
    assert sunday is not None
    assert sunday["stats"]["week"]["revenue"] == [{"currency": "AUD", "amount": "80.00"}]  # IN-4, 27 Feb
    assert sunday["stats"]["month"]["revenue"] == [{"currency": "AUD", "amount": "249.50"}]  # March only
    assert board["practitioner"] == {"id": "PR-1", "name": "Dr syd", "active": True}
    assert board["sync"]["status"] == "delayed" and board["sync"]["reason"] == "never synced yet"


def test_the_route_answers_and_refuses_with_reasons(seeded: Engine) -> None:
    status, body = get("dashboard", {"date": "2026-03-04"}, tenant="syd", practitioner="PR-1")
    assert status == 200 and [s["id"] for s in body["sessions"]] == ["AP-4", "AP-8", "AP-5"]
    assert get("dashboard", {"date": "2026-03-04"}, tenant="nope", practitioner="PR-1") == (
        404, {"error": "unknown-tenant"})
    for practitioner in ("PR-404", "PR-GONE", "x" * 65):
        assert get("dashboard", {"date": "2026-03-04"}, tenant="syd", practitioner=practitioner) == (
            404, {"error": "unknown-practitioner"})
    edges = [f"0001-01-{d:02d}" for d in range(1, 32)] + [f"9999-12-{d:02d}" for d in range(1, 32)]
    for bad in ("2026-02-30", "20260304", "2026-W10-3", "04/03/2026", "", "2026-3-4", "2026-03-04T00:00", *edges):
        # The calendar's edges once overflowed into a 503 (issue 24, row 2).
        assert get("dashboard", {"date": bad}, tenant="syd", practitioner="PR-1") == (
            400, {"error": "bad-date", "expected": "YYYY-MM-DD between 1900-01-01 and 2999-12-31"}), bad
    status, body = get("dashboard", tenant="syd", practitioner="PR-1")  # no date: today in Sydney
    assert status == 200 and body["date"] == datetime.now(SYD.zone).date().isoformat()


def test_a_tenant_sees_only_its_own_rows_whatever_else_the_request_says(seeded: Engine) -> None:
    status, body = get("dashboard", {"date": "2026-03-04", "tenant": "other", "tenant_id": "other"},
                       tenant="syd", practitioner="PR-1")
    assert status == 200 and body["tenant"] == "syd"
    assert "AP-X" not in json.dumps(body) and body["practitioner"]["name"] == "Dr syd"
    assert body["stats"]["week"]["revenue"] == [{"currency": "AUD", "amount": "249.50"}]  # not other's 1,000
    # Another tenant's practitioner is unknown here, and the same id there shows that tenant's day.
    assert get("dashboard", {"date": "2026-03-04"}, tenant="syd", practitioner="PR-ONLY-OTHER")[0] == 404
    status, theirs = get("dashboard", {"date": "2026-03-04"}, tenant="other", practitioner="PR-1")
    assert status == 200 and [s["id"] for s in theirs["sessions"]] == ["AP-X"]
    assert get("dashboard", {"date": "2026-03-04"}, tenant="syd%2Fother", practitioner="PR-1")[0] == 404


def test_the_practitioner_list_pages_a_tenants_live_practitioners(seeded: Engine) -> None:
    with write_transaction(seeded) as conn:
        for n in range(2, 6):
            put(conn, practitioners, "syd", f"PR-{n}", display_name=f"Dr {n}", active=n != 3)
    status, first = get("practitioners", {"limit": "3"}, tenant="syd")
    assert status == 200 and first["tenant"] == "syd"
    assert first["practitioners"] == [{"id": "PR-1", "name": "Dr syd", "active": True},
                                      {"id": "PR-2", "name": "Dr 2", "active": True},
                                      {"id": "PR-3", "name": "Dr 3", "active": False}]
    status, rest = get("practitioners", {"limit": "3", "after": first["next"]}, tenant="syd")
    # PR-GONE is deleted and PR-ONLY-OTHER belongs to the other tenant: neither is listed.
    assert status == 200 and [p["id"] for p in rest["practitioners"]] == ["PR-4", "PR-5"] and rest["next"] is None
    assert [p["id"] for p in get("practitioners", tenant="other")[1]["practitioners"]] == ["PR-1", "PR-ONLY-OTHER"]
    for bad in ("0", "501", "x", "-1", "", "²"):
        assert get("practitioners", {"limit": bad}, tenant="syd")[1]["error"] == "bad-limit", bad
    assert get("practitioners", {"after": "x" * 65}, tenant="syd")[1]["error"] == "bad-after"
    assert get("practitioners", tenant="nope") == (404, {"error": "unknown-tenant"})


def run(conn: Any, tenant: str, kind: str, status: str, finished: datetime) -> None:
    conn.execute(insert(sync_runs).values(id=str(uuid.uuid4()), tenant_id=tenant, kind=kind, status=status,
                                          started_at=finished - timedelta(minutes=1), finished_at=finished))


def test_health_is_per_tenant_and_503_when_one_is_in_error(seeded: Engine) -> None:
    now = datetime.now(UTC)
    with write_transaction(seeded) as conn:
        run(conn, "syd", "incremental", "completed", now - timedelta(minutes=5))  # schedule: every 15 min
        run(conn, "other", "incremental", "completed", now - timedelta(minutes=20))
    status, body = get("health")
    assert status == 200 and body["status"] == "delayed"
    assert {t["tenant"]: t["status"] for t in body["tenants"]} == {"other": "delayed", "syd": "on_time"}
    with write_transaction(seeded) as conn:
        for n in range(3):  # three failed runs after the success: a streak
            run(conn, "other", "incremental", "failed", now - timedelta(minutes=3 - n))
    status, body = get("health")
    other = next(t for t in body["tenants"] if t["tenant"] == "other")
    assert status == 503 and body["status"] == "error"
    assert other["status"] == "error" and other["failureStreak"] == 3 and other["reason"] == "the last 3 runs failed"
    with write_transaction(seeded) as conn:
        run(conn, "other", "incremental", "completed", now)
    assert get("health")[0] == 200


def test_the_status_page_escapes_what_it_shows(seeded: Engine) -> None:
    with write_transaction(seeded) as conn:
        conn.execute(insert(sync_runs).values(id=str(uuid.uuid4()), tenant_id="syd", kind="full", status="failed",
                                              started_at=T0, finished_at=T0,
                                              error='<script>alert("x")</script> token refused'))
    request = func.HttpRequest("GET", "http://localhost/api/status", body=b"", params={}, route_params={})
    response = registered_functions()["status_page"].get_user_function()(request)
    page = response.get_body().decode()
    assert response.status_code == 200 and response.mimetype == "text/html"
    # One script: the page's own refresh, after the content; the stored text arrives escaped.
    assert page.count("<script>") == 1 and page.index("<script>") > page.index("</main>")
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; token refused" in page
    assert 'class="card delayed" data-tenant="syd"' in page and 'data-tenant="other"' in page
    assert page.count("0.0/min (last 15 min)") == 2  # the webhook rate of each tenant
    assert "Alice" not in page and "AB" not in page  # no client data on the operators' page


def test_health_follows_the_freshness_thresholds_of_the_spec_or_the_tenant(database_url: str, tmp_path: Path) -> None:
    """HIE's bundled spec: on time within 3.5 h, error after 6 h (its sync runs every 3 h, where
    one interval would make 3 h 15 min 'delayed'); a tenant's own thresholds win over both."""
    hie = json.loads((Path(__file__).resolve().parents[2] / "samples" / "tenants.hie-facilities.json").read_text())
    own = {**TENANTS[1], "id": "own", "freshness": {"on_time_minutes": 60, "error_after_minutes": 120}}
    with installed_runtime(database_url, tmp_path, [*hie["tenants"], own], InMemoryQueues()) as rt:
        now = datetime.now(UTC)

        def health(tenant: str, age: timedelta) -> dict[str, Any]:
            with write_transaction(rt.engine) as conn:
                conn.execute(sync_runs.delete().where(sync_runs.c.tenant_id == tenant))
                run(conn, tenant, "incremental", "completed", now - age)
            return next(t for t in get("health")[1]["tenants"] if t["tenant"] == tenant)

        at = health("hie-facilities", timedelta(hours=3, minutes=15))
        assert (at["status"], at["reason"], at["errorAfterSeconds"]) == ("on_time", "synced within 3.5 h", 21_600)
        assert health("hie-facilities", timedelta(hours=5))["reason"] == "no successful sync for over 3.5 h"
        assert health("hie-facilities", timedelta(hours=6, minutes=5))["status"] == "error"
        mine = health("own", timedelta(minutes=90))  # two 15-minute intervals would say error
        assert (mine["status"], mine["reason"]) == ("delayed", "no successful sync for over 1 h")
        assert health("own", timedelta(minutes=121))["reason"] == "no successful sync for over 2 h"
