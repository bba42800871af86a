"""The sandbox over real HTTP on loopback: what a Halaxy client meets."""
from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from devtools.sandbox.data import SandboxData
from devtools.sandbox.gates import Faults
from devtools.sandbox.server import Sandbox, SandboxConfig
from devtools.synthetic import SyntheticCounts
from tests.fakes import ManualClock

ANCHOR = datetime(2026, 1, 15, 9, tzinfo=UTC)
CREDS = {"grant_type": "client_credentials", "client_id": "sandbox-client", "client_secret": "sandbox-secret"}



@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sandbox(clock: ManualClock) -> Iterator[Sandbox]:
    data = SandboxData(SyntheticCounts(3, 40, 230, 30), seed=5, anchor=ANCHOR)
    box = Sandbox(data, SandboxConfig(token_ttl=30, rate_limit=50, expired_style="mixed"), clock=clock).start()
    yield box
    box.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(headers={"User-Agent": "fhir-mirror-tests"}, timeout=10) as client:
        yield client


def token(http: httpx.Client, box: Sandbox) -> dict[str, str]:
    response = http.post(f"{box.base_url}/oauth/token", data=CREDS)
    assert response.status_code == 200
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_token_endpoint_accepts_form_and_json_and_rejects_bad_clients(sandbox: Sandbox, http: httpx.Client) -> None:
    url = f"{sandbox.base_url}/oauth/token"
    assert http.post(url, data=CREDS).json()["expires_in"] == 3600
    assert http.post(url, json=CREDS).status_code == 200
    assert http.post(url, data={**CREDS, "client_secret": "wrong"}).status_code == 401
    assert http.post(url, data={**CREDS, "grant_type": "password"}).status_code == 400


def test_paging_returns_every_resource_once_with_total_and_links(sandbox: Sandbox, http: httpx.Client) -> None:
    auth = token(http, sandbox)
    url, seen, totals = f"{sandbox.base_url}/Appointment?_count=40", [], set()
    while url:
        bundle = http.get(url, headers=auth).json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
        totals.add(bundle["total"])
        seen += [e["resource"]["id"] for e in bundle["entry"]]
        url = next((str(link["url"]) for link in bundle["link"] if link["relation"] == "next"), "")
    assert totals == {230} and len(seen) == 230 == len(set(seen))


def test_last_updated_windows_are_half_open_and_partition_the_data(sandbox: Sandbox, http: httpx.Client) -> None:
    auth = token(http, sandbox)
    stamps = sorted({e["lastUpdated"] for e in http.get(f"http://127.0.0.1:{sandbox.port}/_sandbox/snapshot").json()
                     if e["type"] == "Patient"})
    cut = stamps[len(stamps) // 2]
    ids = []
    for window in ([f"lt{cut}"], [f"ge{cut}"]):
        bundle = http.get(f"{sandbox.base_url}/Patient", params={"_lastUpdated": window, "_count": 1000}, headers=auth).json()
        ids.append({e["resource"]["id"] for e in bundle["entry"]})
        assert all((e["resource"]["meta"]["lastUpdated"] < cut) == window[0].startswith("lt") for e in bundle["entry"])
    assert not ids[0] & ids[1] and len(ids[0] | ids[1]) == 40


def test_search_by_id_and_appointment_date(sandbox: Sandbox, http: httpx.Client) -> None:
    auth = token(http, sandbox)
    bundle = http.get(f"{sandbox.base_url}/Patient", params={"_id": "PT-2000001,PT-2000003"}, headers=auth).json()
    assert sorted(e["resource"]["id"] for e in bundle["entry"]) == ["PT-2000001", "PT-2000003"]
    day = http.get(f"{sandbox.base_url}/Appointment", params={"date": ["ge2026-01-15", "lt2026-01-16"], "_count": 1000},
                   headers=auth).json()
    assert day["total"] >= 1 and all(e["resource"]["start"].startswith("2026-01-1") for e in day["entry"])
    assert http.get(f"{sandbox.base_url}/Patient", params={"_lastUpdated": "geyesterday"}, headers=auth).status_code == 400
    assert http.get(f"{sandbox.base_url}/Patient", params={"_count": "x"}, headers=auth).status_code == 400


def test_read_404_410_and_churn_shows_in_snapshot(sandbox: Sandbox, http: httpx.Client) -> None:
    auth = token(http, sandbox)
    admin = f"http://127.0.0.1:{sandbox.port}/_sandbox"
    read = http.get(f"{sandbox.base_url}/Patient/PT-2000001", headers=auth)
    assert read.status_code == 200 and read.json()["meta"]["versionId"]
    assert http.get(f"{sandbox.base_url}/Patient/PT-9", headers=auth).status_code == 404
    changes = http.post(f"{admin}/churn", json={"creates": 3, "updates": 4, "deletes": 2}).json()["changes"]
    assert [c["action"] for c in changes].count("delete") == 2
    deleted = next(c for c in changes if c["action"] == "delete")
    assert http.get(f"{sandbox.base_url}/{deleted['type']}/{deleted['id']}", headers=auth).status_code == 410
    snapshot = {(e["type"], e["id"]): e for e in http.get(f"{admin}/snapshot").json()}
    assert snapshot[(deleted["type"], deleted["id"])]["deleted"] is True
    for change in changes:
        entry = snapshot[(change["type"], change["id"])]
        assert entry["lastUpdated"] >= change["lastUpdated"]
    created = next(c for c in changes if c["action"] == "create")
    assert http.get(f"{sandbox.base_url}/{created['type']}/{created['id']}", headers=auth).status_code == 200


def test_user_agent_is_required_and_tokens_expire_both_ways(sandbox: Sandbox, http: httpx.Client, clock: ManualClock) -> None:
    auth = token(http, sandbox)
    assert httpx.get(f"{sandbox.base_url}/Patient", headers={**auth, "User-Agent": ""}).status_code == 403
    assert http.get(f"{sandbox.base_url}/Patient", headers={"Authorization": "Bearer forged"}).status_code == 401
    clock.now += 31
    answers = [http.get(f"{sandbox.base_url}/Patient", headers=auth) for _ in range(2)]
    assert sorted(a.status_code for a in answers) == [401, 403]
    expired = next(a for a in answers if a.status_code == 403).json()
    assert expired["resourceType"] == "OperationOutcome" and expired["issue"][0]["code"] == "expired"


def test_rate_limit_headers_and_429_with_retry_after(sandbox: Sandbox, http: httpx.Client, clock: ManualClock) -> None:
    auth = token(http, sandbox)
    remaining = [int(http.get(f"{sandbox.base_url}/Patient/PT-2000001", headers=auth).headers["x-ratelimit-remaining"])
                 for _ in range(50)]
    assert remaining == list(range(49, -1, -1))
    refused = http.get(f"{sandbox.base_url}/Patient/PT-2000001", headers=auth)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
    clock.now += 61
    assert http.get(f"{sandbox.base_url}/Patient/PT-2000001", headers=token(http, sandbox)).status_code == 200


def test_a_source_that_does_not_advertise_its_limit_still_answers_429_with_retry_after(
        sandbox: Sandbox, http: httpx.Client, clock: ManualClock) -> None:
    sandbox.config.advertise_limit = False
    auth = token(http, sandbox)
    answers = [http.get(f"{sandbox.base_url}/Patient/PT-2000001", headers=auth) for _ in range(51)]
    assert [a.status_code for a in answers] == [200] * 50 + [429]
    assert not any(name.startswith("x-ratelimit") for a in answers for name in a.headers)
    assert answers[-1].headers["retry-after"] == "60"


def test_faults_from_the_admin_endpoint(sandbox: Sandbox, http: httpx.Client) -> None:
    auth = token(http, sandbox)
    admin = f"http://127.0.0.1:{sandbox.port}/_sandbox/faults"
    assert http.post(admin, json={"fault_rate": 1.0, "rate_limit": 0}).json()["fault_rate"] == 1.0
    assert http.get(f"{sandbox.base_url}/Patient/PT-2000001", headers=auth).status_code in (500, 502, 503)
    http.post(admin, json={"fault_rate": 0.0, "drop_rate": 1.0})
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{sandbox.base_url}/Patient/PT-2000001", headers={**auth, "User-Agent": "t"})
    http.post(admin, json={"drop_rate": 0.0, "hang_rate": 1.0, "hang_ms": 1500})
    with pytest.raises(httpx.ReadTimeout):  # held past the client's timeout, never answered
        httpx.get(f"{sandbox.base_url}/Patient/PT-2000001", headers=auth, timeout=0.3)
    settings = http.post(admin, json={"hang_rate": 0.0}).json()
    assert settings["drop_rate"] == 0.0 and settings["hang_rate"] == 0.0 and settings["requests"] >= 4
    assert http.get(f"{sandbox.base_url}/Patient/PT-2000001", headers=auth).status_code == 200


def test_generation_is_deterministic() -> None:
    counts = SyntheticCounts(2, 10, 20, 5)
    one = SandboxData(counts, seed=9, anchor=ANCHOR).snapshot()
    two = SandboxData(counts, seed=9, anchor=ANCHOR).snapshot()
    three = SandboxData(counts, seed=10, anchor=ANCHOR).snapshot()
    assert one == two and one != three
    assert json.dumps(one)  # plain JSON


def test_faults_default_to_none() -> None:
    assert Faults(rng=random.Random(1)).settings() == {"fault_rate": 0.0, "drop_rate": 0.0, "latency_ms": 0,
                                                       "hang_rate": 0.0, "hang_ms": 5000}


def test_bad_admin_input_is_a_400_and_changes_nothing(sandbox: Sandbox, http: httpx.Client) -> None:
    admin = f"http://127.0.0.1:{sandbox.port}/_sandbox"
    before = http.get(f"{admin}/snapshot").json()
    for path, body in (("churn", b"{not json"), ("churn", b"[1]"), ("churn", b'{"creates": "many"}'),
                       ("faults", b'{"fault_rate": 3}'), ("faults", b'{"fault_rate": 0.5, "latency_ms": "slow"}'),
                       ("faults", b'{"rate_limit": -1}')):
        response = http.post(f"{admin}/{path}", content=body)
        assert response.status_code == 400, (path, body)
    assert http.get(f"{admin}/snapshot").json() == before
    assert http.get(f"{admin}/faults").json()["fault_rate"] == 0.0


class _BrokenRandom(random.Random):
    """A fault source that fails: a stand-in for any bug in the sandbox's own code."""

    def random(self) -> float:
        raise RuntimeError("sandbox bug")


def test_a_bug_in_the_sandbox_is_a_500_with_its_traceback_logged(caplog: pytest.LogCaptureFixture) -> None:
    data = SandboxData(SyntheticCounts(1, 2, 2, 1), seed=1, anchor=ANCHOR)
    box = Sandbox(data, SandboxConfig(faults=Faults(rng=_BrokenRandom()))).start()
    try:
        with caplog.at_level("ERROR", logger="devtools.sandbox.server"):
            answer = httpx.post(f"{box.base_url}/oauth/token", data=CREDS, headers={"User-Agent": "t"}, timeout=10)
    finally:
        box.stop()
    # Not the "400 malformed request" that once hid a TypeError behind every answer.
    assert answer.status_code == 500 and answer.json()["issue"][0]["code"] == "exception"
    (record,) = [r for r in caplog.records if r.name == "devtools.sandbox.server"]
    assert "POST /main/oauth/token" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
