"""Every `python -m shared.cli` command run as a user runs it: a subprocess with real arguments,
its own settings, real files, a real database and a sandbox started from the same command line.

(`generate`, `migrate` and `load` through a subprocess are also in tests/integration/test_load_cli.py;
`serve --once` to the end in tests/e2e/test_local_host.py.)
"""
from __future__ import annotations

import json
import math
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from devtools.compare import compare, live_in_snapshot, mirrored, rest_mirrored
from shared.settings import load_settings
from shared.store.engine import create_store_engine

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_TENANTS = ROOT / "samples" / "tenants.sandbox.json"


def cli_env() -> dict[str, str]:
    # No SYNC_* from the caller's environment: each test says what it means.
    return {**{k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}, "PYTHONPATH": str(ROOT)}


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


class Running:
    """A long-running command; ``wait_for`` reads its output until a line matches (an event, not a sleep)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "shared.cli", *args], cwd=ROOT, env=cli_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._selector = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        wanted = re.compile(pattern)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            if not self._selector.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"exited {self.proc.wait()} before {pattern!r}:\n" + "".join(self.lines[-40:]))
            self.lines.append(line)
            if match := wanted.search(line):
                return match
        raise AssertionError(f"no line matched {pattern!r} in {timeout} s:\n" + "".join(self.lines[-40:]))

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        """The exit code and everything the command printed."""
        assert self.proc.stdout is not None
        rest, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, "".join(self.lines) + (rest or "")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._selector.close()


@pytest.fixture
def cli_sandbox() -> Iterator[tuple[Running, str]]:
    """`python -m shared.cli sandbox` on a free port: the process and its FHIR base URL."""
    box = Running("sandbox", "--port", "0", "--seed", "4", "--practitioners", "3", "--patients", "60",
                  "--appointments", "1200", "--invoices", "80")
    try:
        base = box.wait_for(r"FHIR base (http://127\.0\.0\.1:\d+/main)").group(1)
        yield box, base
    finally:
        box.stop()


def tenants_for(tmp_path: Path, base_url: str) -> Path:
    """The bundled sample, pointed at this sandbox's port."""
    sample = json.loads(SAMPLE_TENANTS.read_text())
    sample["tenants"][0]["fhir_base_url"] = base_url
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps(sample))
    return path


def test_the_sandbox_command_serves_a_token_and_a_page(cli_sandbox: tuple[Running, str]) -> None:
    _box, base = cli_sandbox
    with httpx.Client(headers={"User-Agent": "cli-test"}, timeout=10) as http:
        token = http.post(f"{base}/oauth/token", data={"grant_type": "client_credentials",
                                                       "client_id": "sandbox-client", "client_secret": "sandbox-secret"})
        assert token.status_code == 200, token.text
        page = http.get(f"{base}/Patient", params={"_count": "25"},
                        headers={"Authorization": f"Bearer {token.json()['access_token']}"})
    assert page.status_code == 200, page.text
    bundle = page.json()
    assert bundle["total"] == 60 and len(bundle["entry"]) == 25
    assert any(link["relation"] == "next" for link in bundle["link"])


def test_a_reconcile_against_a_cli_sandbox_converges_and_keeps_its_page_size(
        cli_sandbox: tuple[Running, str], tmp_path: Path) -> None:
    _box, base = cli_sandbox
    admin = base.removesuffix("/main") + "/_sandbox"
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    tenants = tenants_for(tmp_path, base)
    assert cli("--database-url", db, "migrate").returncode == 0
    before = httpx.get(f"{admin}/faults").json()["requests"]
    done = cli("--database-url", db, "--tenants-file", str(tenants), "reconcile", "--tenant", "sandbox",
               "--kind", "full", "--page-size", "500")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tenant sandbox: full reconcile completed" in done.stdout
    sent = httpx.get(f"{admin}/faults").json()["requests"] - before
    snapshot = httpx.get(f"{admin}/snapshot").json()
    # Every type in pages of 500 (plus the token): 1,200 appointments are 3 pages, not 12 of 100.
    per_type: dict[str, int] = {}
    for item in snapshot:
        per_type[item["type"]] = per_type.get(item["type"], 0) + 1
    pages = sum(max(1, math.ceil(n / 500)) for n in per_type.values())
    assert sent <= pages + len(per_type) + 1, (sent, per_type)  # at most one empty page per type
    engine = create_store_engine(load_settings(database_url=db))
    try:
        assert compare(mirrored(engine, "sandbox"), live_in_snapshot(snapshot)).equal
    finally:
        engine.dispose()


def test_a_reconcile_with_no_source_running_names_the_url_and_how_to_start_the_sandbox(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    db = f"sqlite:///{tmp_path / 'down.db'}"
    tenants = tenants_for(tmp_path, f"http://127.0.0.1:{port}/main")
    assert cli("--database-url", db, "migrate").returncode == 0
    done = cli("--database-url", db, "--tenants-file", str(tenants), "reconcile", "--tenant", "sandbox")
    assert done.returncode == 2
    assert f"nothing answers at http://127.0.0.1:{port}/main" in done.stderr
    assert f"python -m shared.cli sandbox --port {port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_tenants_lists_the_sample_without_its_secrets() -> None:
    done = cli("--tenants-file", str(SAMPLE_TENANTS), "tenants")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sandbox\t") and "1 tenant(s) valid" in done.stderr
    assert "sandbox-secret" not in done.stdout + done.stderr


def test_load_names_the_file_it_cannot_read_before_anything_else(tmp_path: Path) -> None:
    done = cli("--database-url", f"sqlite:///{tmp_path / 'x.db'}", "load", "--tenant", "demo",
               str(tmp_path / "missing.json"), str(tmp_path))
    assert done.returncode == 2
    assert f"{tmp_path / 'missing.json'}: no such file" in done.stderr
    assert f"{tmp_path}: a directory, not a file" in done.stderr
    assert "unknown tenant" not in done.stderr  # the files come first: a tenants file was never given


def test_load_refuses_a_batch_size_of_zero_and_names_the_entry_a_bundle_breaks_in(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    base = ["--database-url", db, "--tenants-file", str(SAMPLE_TENANTS)]
    assert cli(*base, "migrate").returncode == 0
    truncated = tmp_path / "one.json"
    truncated.write_text('{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": '
                         '{"resourceType": "Patient", "id": "PT-1", "name": [{"fam')
    zero = cli(*base, "load", "--tenant", "sandbox", "--batch-size", "0", str(truncated))
    assert zero.returncode == 2 and "--batch-size 0: must be at least 1" in zero.stderr
    broken = cli(*base, "load", "--tenant", "sandbox", str(truncated))
    assert broken.returncode == 2
    assert f"{truncated}: entry 1: invalid JSON" in broken.stderr, broken.stderr  # its one entry, not "entry 2"


def test_migrate_against_a_database_that_does_not_answer_says_so_without_advising_migrate() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = cli("--database-url", f"postgresql+psycopg://postgres@127.0.0.1:{port}/none", "migrate")
    assert done.returncode == 2
    assert "cannot use the database" in done.stderr and "SYNC_DATABASE_URL" in done.stderr
    assert "run `python -m shared.cli migrate`" not in done.stderr


def test_generate_refuses_an_anchor_at_the_calendars_edge(tmp_path: Path) -> None:
    done = cli("generate", "--out", str(tmp_path / "g.ndjson"), "--anchor", "9999-12-31")
    assert done.returncode == 2 and "--anchor 9999-12-31: must be a date between 1900-01-01 and 2999-12-31" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "g.ndjson").exists()


def test_generate_writes_what_it_says(tmp_path: Path) -> None:
    out = tmp_path / "g.ndjson"
    done = cli("generate", "--out", str(out), "--practitioners", "2", "--patients", "10", "--appointments", "20",
               "--invoices", "5", "--referrals", "0")
    assert done.returncode == 0, done.stderr
    found = re.search(r"wrote ([\d,]+) resources", done.stdout)
    assert found, done.stdout
    written = int(found.group(1).replace(",", ""))
    assert written == len(out.read_text().splitlines()) == 2 + 2 + 10 + 20 + 5  # roles beside practitioners


@pytest.mark.parametrize("stop, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_serve_once_interrupted_exits_non_zero(tmp_path: Path, stop: signal.Signals, code: int) -> None:
    host = Running("--database-url", f"sqlite:///{tmp_path / 'm.db'}", "serve", "--port", "0", "--once")
    try:
        host.wait_for(r"local host on http://127\.0\.0\.1:\d+")
        host.proc.send_signal(stop)
        returncode, output = host.finish()
    finally:
        host.stop()
    assert returncode == code, output
    assert f"interrupted before the cycle finished (exit {code})" in output
    assert "OK: mirror equals the source" not in output


def test_serve_prints_links_that_work_and_stays_quiet_per_event(tmp_path: Path) -> None:
    """The banner's practitioner list and dashboard link answer once the first sync is done; the
    function list is printed once; no per-webhook or per-change line at the default level."""
    host = Running("--database-url", f"sqlite:///{tmp_path / 'm.db'}", "serve", "--port", "0")
    try:
        listing = host.wait_for(r"practitioners +(http://\S+/practitioners)").group(1)
        dashboard = host.wait_for(r"dashboard +(http://\S+/dashboard)").group(1)
        host.wait_for(r"function key +none needed")
        done = host.wait_for(r"first full reconcile: (\w+), ([\d,]+) rows in ([\d.]+) s")
        assert done.group(1) == "completed" and int(done.group(2).replace(",", "")) > 0
        practitioners = httpx.get(listing, timeout=30).json()["practitioners"]
        board = httpx.get(dashboard, timeout=30)
        assert board.status_code == 200, board.text
        assert board.json()["practitioner"]["id"] in {p["id"] for p in practitioners}
        assert httpx.get(listing.replace("/tenants/demo/practitioners", "/status"), timeout=30).status_code == 200
        admin = listing.split("/api/")[0] + "/admin/host/status"
        deadline = time.monotonic() + 60  # the churn's webhooks: some changes applied while we watch
        while httpx.get(admin, timeout=30).json()["queues"]["changes"]["handled"] < 3:
            assert time.monotonic() < deadline, "no webhook change was applied in 60 s"
            time.sleep(0.2)
        host.proc.send_signal(signal.SIGTERM)
        returncode, output = host.finish()
    finally:
        host.stop()
    assert returncode == 0, output  # a served host stopped on request has done its job
    assert output.count("reconcile_fan_out") == 0 and "17 functions" in output  # counted once, not listed twice
    assert "outcome=enqueued" not in output and "outcome=applied" not in output


REST_APIS = ("hie-facilities", "ppb-premises", "cliniko", "pems")


@pytest.mark.parametrize("api", REST_APIS)
def test_each_rest_sandbox_and_its_sample_tenants_file_mirror_from_the_command_line(api: str, tmp_path: Path) -> None:
    """The contract: `sandbox --api NAME`, its churn and snapshot, and samples/tenants.NAME.json
    reconciling it with `reconcile --tenant NAME --kind full` until the mirror equals the snapshot."""
    from devtools.compare import record_digest

    box = Running("sandbox", "--api", api, "--port", "0", "--seed", "3", "--records", "150",
                  "--patients", "30", "--appointments", "90", "--invoices", "30")
    try:
        base = box.wait_for(r"serving on (http://127\.0\.0\.1:\d+)").group(1)
        port = base.rsplit(":", 1)[1]
        tenants = tmp_path / f"tenants.{api}.json"
        tenants.write_text((ROOT / "samples" / f"tenants.{api}.json").read_text().replace("127.0.0.1:7072",
                                                                                            f"127.0.0.1:{port}"))
        db = f"sqlite:///{tmp_path / 'rest.db'}"
        migrated = cli("--database-url", db, "--tenants-file", str(tenants), "migrate")
        assert migrated.returncode == 0, migrated.stderr
        settings = load_settings(database_url=db, tenants_file=tenants)
        (tenant,) = settings.load_tenants()
        for step in ("first", "after churn"):
            if step == "after churn":
                churned = httpx.post(f"{base}/_sandbox/churn", json={"creates": 4, "updates": 4, "deletes": 2})
                assert churned.status_code == 200 and len(churned.json()["changes"]) == 10
            done = cli("--database-url", db, "--tenants-file", str(tenants), "reconcile", "--tenant", api,
                       "--kind", "full")
            assert done.returncode == 0 and f"tenant {api}: full reconcile completed" in done.stdout, done.stderr
            snapshot = httpx.get(f"{base}/_sandbox/snapshot").json()
            assert snapshot and set(snapshot[0]) == {"type", "id", "lastUpdated", "deleted"}
            engine = create_store_engine(settings)
            try:
                mirror, times = rest_mirrored(engine, tenant), rest_mirrored(engine, tenant, times=True)
            finally:
                engine.dispose()
            live = {(e["type"], e["id"]) for e in snapshot if not e["deleted"]}
            assert {(kind, sid) for kind, sid, _ in mirror} == live, step
            stated = {(e["type"], e["id"], datetime.fromisoformat(e["lastUpdated"].replace("Z", "+00:00")).isoformat())
                      for e in snapshot if not e["deleted"] and e["lastUpdated"] is not None}
            assert stated <= times, step  # versions agree where the source states them
            if api == "ppb-premises":  # it states none: the snapshot says null, the mirror kept each record
                assert not stated and all(len(version) == len(record_digest({})) for _, _, version in mirror)
    finally:
        box.stop()


def test_reconcile_runs_a_sync_mode_by_name_and_refuses_unknown_ones(tmp_path: Path) -> None:
    """`reconcile --kind incremental --mode patients-only` (samples/tenants.cliniko.json's mode)
    reads patients only: only their watermark moves. Unknown modes and a mode with another kind
    exit 2 naming what to do."""
    from shared.store import cursors

    box = Running("sandbox", "--api", "cliniko", "--port", "0", "--patients", "20", "--appointments", "40")
    try:
        port = box.wait_for(r"serving on http://127\.0\.0\.1:(\d+)").group(1)
        tenants = tmp_path / "tenants.json"
        tenants.write_text((ROOT / "samples" / "tenants.cliniko.json").read_text().replace("127.0.0.1:7072",
                                                                                          f"127.0.0.1:{port}"))
        db = f"sqlite:///{tmp_path / 'modes.db'}"
        args = ("--database-url", db, "--tenants-file", str(tenants))
        assert cli(*args, "migrate").returncode == 0
        assert cli(*args, "reconcile", "--tenant", "cliniko", "--kind", "full").returncode == 0
        unknown = cli(*args, "reconcile", "--tenant", "cliniko", "--mode", "everything")
        assert unknown.returncode == 2
        assert "--mode 'everything': tenant cliniko has no such sync mode (patients-only)" in unknown.stderr
        full = cli(*args, "reconcile", "--tenant", "cliniko", "--kind", "full", "--mode", "patients-only")
        assert full.returncode == 2 and "a sync mode is an incremental run (--kind incremental)" in full.stderr
        engine = create_store_engine(load_settings(database_url=db))
        try:
            with engine.connect() as conn:
                before = {e: cursors.watermark(conn, "cliniko", e) for e in ("patients", "appointments")}
            done = cli(*args, "reconcile", "--tenant", "cliniko", "--kind", "incremental", "--mode", "patients-only")
            assert done.returncode == 0 and "tenant cliniko: incremental reconcile completed" in done.stdout, done.stderr
            with engine.connect() as conn:
                after = {e: cursors.watermark(conn, "cliniko", e) for e in ("patients", "appointments")}
                mode = conn.execute(text("SELECT mode FROM sync_runs ORDER BY started_at DESC")).scalar()
        finally:
            engine.dispose()
        assert None not in (*before.values(), *after.values()), (before, after)
        assert after["patients"] > before["patients"] and after["appointments"] == before["appointments"]  # type: ignore[operator]
        assert mode == "patients-only"
    finally:
        box.stop()


def test_the_fhir_sandbox_answers_the_same_admin_contract() -> None:
    box = Running("sandbox", "--api", "fhir", "--port", "0", "--patients", "10", "--appointments", "20")
    try:
        base = box.wait_for(r"FHIR base (http://127\.0\.0\.1:\d+)/main").group(1)
        assert httpx.post(f"{base}/_sandbox/churn", json={"creates": 1, "updates": 1, "deletes": 1}).status_code == 200
        snapshot = httpx.get(f"{base}/_sandbox/snapshot").json()
        assert {"type", "id", "lastUpdated", "deleted"} <= set(snapshot[0])
    finally:
        box.stop()


def test_bad_specs_and_rest_tenants_fail_at_start_up_one_line_per_problem(tmp_path: Path) -> None:
    spec = json.loads((ROOT / "shared" / "rest" / "specs" / "pems.json").read_text())
    spec["entities"][0]["paginator"] = {"kind": "cursor"}  # no path
    spec["entities"][0]["columns"]["closed"]["type"] = "yes-no"  # no such conversion
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "broken.json").write_text(json.dumps(spec))
    tenants = tmp_path / "tenants.json"
    tenants.write_text(json.dumps([
        {"id": "broken", "name": "B", "source": "rest", "spec": "specs/broken.json", "api_key": "k",
         "variables": {"organization": "org-1"}},
        {"id": "nokey", "name": "N", "source": "rest", "spec": "pems", "variables": {"organization": "org-1"}},
        {"id": "halaxy", "name": "H", "fhir_base_url": "https://h.example/main", "client_id": "c",
         "client_secret": "s", "api_key": "stray"}]))
    for command in (["tenants"], ["migrate"], ["reconcile", "--tenant", "nokey"]):
        done = cli("--database-url", f"sqlite:///{tmp_path / 'x.db'}", "--tenants-file", str(tenants), *command)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert any("tenants[0](id=broken).spec: 'specs/broken.json' is not usable" in line for line in lines), lines
        assert any("broken.json: entities[0](name=pfa_records).paginator.cursor.path: Field required" in line
                   for line in lines), lines
        assert any("broken.json: entities[0](name=pfa_records).columns.closed.type: Input should be" in line
                   for line in lines), lines
        assert any(line.endswith("tenants[1](id=nokey).api_key: required by the spec's auth (api-key)")
                   for line in lines), lines
        assert any("tenants[2](id=halaxy): api_key: only for a rest tenant" in line for line in lines), lines
        assert "stray" not in done.stderr


def test_rest_sandbox_flags_that_cannot_apply_are_refused_with_one_line() -> None:
    hooks = cli("sandbox", "--api", "cliniko", "--port", "0", "--webhook-url", "http://127.0.0.1:9/x",
                "--webhook-secret", "s")
    orgs = cli("sandbox", "--api", "pems", "--port", "0", "--organizations", "0")
    assert (hooks.returncode, orgs.returncode) == (2, 2)
    assert "--webhook-url: cliniko sends no webhooks (HIE and PPB do)" in hooks.stderr
    assert "--organizations must be between 1 and 100" in orgs.stderr
    faults = cli("sandbox", "--api", "pems", "--port", "0", "--fault-rate", "2")
    assert faults.returncode == 2 and "--fault-rate must be between 0 and 1" in faults.stderr  # as the FHIR one
    since = cli("sandbox", "--api", "hie-facilities", "--port", "0", "--updated-since", "supported")
    assert since.returncode == 2 and "--updated-since: only ppb-premises has it (hie-facilities was given)" in since.stderr


@pytest.mark.parametrize("mode", ["refused", "supported"])
def test_the_ppb_sandbox_refuses_or_answers_updated_since_as_asked(mode: str) -> None:
    """`sandbox --api ppb-premises --updated-since MODE`: today's catalogue (400) or the future one
    (only the premises changed since then)."""
    box = Running("sandbox", "--api", "ppb-premises", "--port", "0", "--records", "40", "--updated-since", mode)
    try:
        base = box.wait_for(r"serving on (http://127\.0\.0\.1:\d+)").group(1)
        since = datetime.now(UTC).isoformat()
        churned = httpx.post(f"{base}/_sandbox/churn", json={"creates": 0, "updates": 3, "deletes": 0}).json()
        answer = httpx.post(f"{base}/catalogue-0.0.1/view/premisecatalogue", params={"updatedSince": since},
                            json={"useremail": "sandbox-client", "userpassword": "sandbox-secret"})
        if mode == "refused":
            assert answer.status_code == 400 and "updatedSince" in answer.json()["message"]
        else:
            listed = {str(p["premiseid"]) for p in answer.json()["_embedded"]["vwApiCurrentPremiseList"]}
            assert answer.status_code == 200 and listed == {c["id"] for c in churned["changes"]}
    finally:
        box.stop()


def test_a_pems_sandbox_spreads_its_records_over_the_organizations_asked_for() -> None:
    box = Running("sandbox", "--api", "pems", "--port", "0", "--records", "6", "--organizations", "3")
    try:
        base = box.wait_for(r"serving on (http://127\.0\.0\.1:\d+)").group(1)
        counts = [len(httpx.get(f"{base}/api/v1/organizations/org-{n}/pfa-records",
                                headers={"Authorization": "Bearer sandbox-client"}).json()["data"]) for n in (1, 2, 3, 4)]
        assert counts == [2, 2, 2, 0]
    finally:
        box.stop()
