"""The fault matrix's fast subset (bench/faults/): a few faults, one short run each, on the real
parts — Azurite, SQLite or PostgreSQL, three sandbox sources over HTTP, the local host in a child
process. The full matrix (every fault, 20 runs of 2,000 events) runs outside CI:
``python -m bench.faults``. Each case asserts the run's five checks, and the harness's own check
that a damaged mirror is reported."""
from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from bench.faults import catalogue
from bench.faults.catalogue import FAULTS, SABOTAGE
from bench.faults.cli import matrix_run
from bench.faults.host import SENT_INSIDE, hold_watch
from bench.faults.parts import Host, Outcome
from bench.faults.run import run_case
from devtools.localhost.azurite import free_port
from shared.failpoints import CRASH_EXIT_CODE
from tests.conftest import POSTGRES_ADMIN_URL

EVENTS = 300
FAST_SUBSET = [  # (fault, database): each fault on the database where it bites
    ("none", "sqlite"),
    ("duplicates", "sqlite"),
    ("shuffled", "postgresql"),
    ("crash-after-commit", "postgresql"),
    ("crash-after-enqueue", "sqlite"),
    ("queue-down", "sqlite"),
    ("database-killed", "postgresql"),
    ("bad-credentials", "postgresql"),
]


def run(fault_name: str, database: str, seed: int = 7) -> Outcome:
    fault = SABOTAGE if fault_name == "sabotage" else FAULTS[fault_name]
    if fault.failpoints:  # a short run needs a likelier crash to crash at all (~250 applies)
        fault = replace(fault, failpoints=fault.failpoints.replace(":0.01", ":0.03"))
    return run_case(fault, seed, EVENTS, database, POSTGRES_ADMIN_URL, say=print)


@pytest.mark.azurite
@pytest.mark.slow
@pytest.mark.parametrize(("fault_name", "database"), FAST_SUBSET, ids=[f"{f}-{d}" for f, d in FAST_SUBSET])
def test_fault_leaves_nothing_lost_unexpected_or_regressed(fault_name: str, database: str) -> None:
    outcome = run(fault_name, database)
    assert outcome.events >= EVENTS
    assert (outcome.lost, outcome.unexpected, outcome.regressions, outcome.poison) == (0, 0, 0, 0), outcome.notes
    assert outcome.violations == []  # the fault's own checks (parked changes, a refused replay, …)
    assert outcome.passed
    if fault_name.startswith("crash-"):
        assert outcome.crashes >= 1, "the failpoint never fired: the case proved nothing"


@pytest.mark.azurite
def test_the_harness_reports_a_damaged_mirror_sqlite() -> None:
    outcome = run("sabotage", "sqlite")
    assert outcome.lost >= 1  # the deleted row an acknowledged webhook had written
    assert outcome.regressions >= 1  # the row put back to an older version, caught by the trigger
    assert outcome.unexpected >= 1  # that row's lastUpdated is no longer its source's
    # the REST tenant's record given other content behind the app's back, after its event was acknowledged
    assert any(note.startswith("acknowledged, not applied: t3 facilities/") for note in outcome.notes), outcome.notes
    assert not outcome.passed


def test_a_host_that_crashes_while_it_starts_is_started_again(tmp_path: Path) -> None:
    """A restarted host can hit a failpoint before it answers (messages were waiting): that is
    one more crash, not the end of the run."""
    script = ("import os, sys, runpy; spawn = int(os.environ['FAILPOINTS_SEED'].rsplit('-', 1)[1]); "
              f"sys.exit({CRASH_EXIT_CODE}) if spawn <= 2 else None; "
              f"sys.argv = ['http.server', '--bind', '127.0.0.1', str({{port}})]; "
              "runpy.run_module('http.server', run_name='__main__')")
    port = free_port()
    host = Host({**os.environ, "FAILPOINTS_SEED": "7"}, port, tmp_path / "host.log",
                command=[sys.executable, "-c", script.format(port=port)]).start()
    try:
        assert (host.spawns, host.crashes, host.failure) == (3, 2, None)
    finally:
        host.stop()


def test_a_run_the_harness_cannot_finish_is_a_failed_run_and_the_matrix_goes_on() -> None:
    outcome = matrix_run(FAULTS["none"], 1, 10, "postgresql", "postgresql+psycopg://postgres@127.0.0.1:1/postgres")
    assert not outcome.passed and outcome.violations[0].startswith("the run did not finish")


def test_the_storm_watch_counts_requests_that_arrive_well_inside_an_announced_retry_after() -> None:
    """The source's view of rate-limit-storm: from HOLD_GRACE after a 429 until the time its
    Retry-After named, requests that still arrive are counted (and how late), for the log line."""
    counters: dict[str, int] = {}

    class Counting:
        def count(self, name: str, n: int = 1) -> None:
            counters[name] = counters.get(name, 0) + n

        def peak(self, name: str, value: int) -> None:
            counters[name] = max(counters.get(name, 0), value)

    watched = catalogue._watching(Counting(), "t1")  # type: ignore[arg-type]  # a stand-in Run
    watched("c", 100.0, (False, 0, 10))  # 429 at 100: hold until 110
    watched("c", 100.5, (False, 0, 9))  # in flight when the 429 came (within the grace): not counted as early
    watched("c", 105.0, (True, 5, 0))  # well inside the hold: counted
    watched("c", 110.0, (True, 4, 0))  # the hold is over
    watched("c", 111.0, (True, 3, 0))
    assert counters["429s t1"] == 2 and counters["arrived late in a Retry-After t1"] == 1
    assert counters["latest ms into one t1"] == 5000


@pytest.mark.asyncio
async def test_the_host_reports_every_request_the_app_sends_after_a_429_reached_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The app's view of rate-limit-storm, with no grace: the host's runtime is given a transport
    that watches every request and prints each GET sent after a 429 and before the Retry-After."""
    answers = iter([httpx.Response(429, headers={"retry-after": "30"})] + [httpx.Response(200)] * 3)
    transport = hold_watch(lambda: httpx.MockTransport(lambda r: next(answers)))
    async with httpx.AsyncClient(transport=transport()) as client:
        await client.get("http://127.0.0.1:1/main/Patient/PT-1")  # answered 429: held for 30 s
        await client.post("http://127.0.0.1:1/main/oauth/token")  # a token: not throttled, not counted
        await client.get("http://127.0.0.2:1/main/Patient/PT-1")  # another source: not held
        await client.get("http://127.0.0.1:1/main/Patient/PT-2")  # inside the hold
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(SENT_INSIDE)]
    assert len(lines) == 1 and lines[0].startswith(f"{SENT_INSIDE}: 127.0.0.1:1 /main/Patient/PT-2 ")


def test_faults_that_did_not_bite_fail_their_run() -> None:
    """A fault that never acted proves nothing: queue-down with no webhook re-sent, database-killed
    with no session terminated, dropped-webhooks with none dropped."""
    class Notifier:
        def __init__(self, attempts: list[int]) -> None:
            self.attempts = attempts

        def deliveries(self) -> list[dict[str, Any]]:
            return [{"attempts": n, "status": "dropped" if n == 0 else "delivered"} for n in self.attempts]

    class FakeRun:
        def __init__(self, *attempts: list[int]) -> None:
            self.tenants = [SimpleNamespace(rest=False, sandbox=SimpleNamespace(notifier=Notifier(a))) for a in attempts]
            self.counters: dict[str, int] = {}
            self.violations: list[str] = []

        def count(self, name: str, n: int = 1) -> None:
            self.counters[name] = self.counters.get(name, 0) + n

    calm, bitten = FakeRun([1, 1], [1]), FakeRun([1, 3], [2, 0])
    catalogue._queue_was_down(calm)  # type: ignore[arg-type]  # a stand-in Run
    catalogue._queue_was_down(bitten)  # type: ignore[arg-type]  # a stand-in Run
    assert calm.violations and "did not bite" in calm.violations[0]
    assert (bitten.violations, bitten.counters["deliveries re-sent"]) == ([], 3)
    catalogue._sessions_were_killed(calm)  # type: ignore[arg-type]  # a stand-in Run
    assert len(calm.violations) == 2
    bitten.counters["sessions killed"] = 4
    catalogue._sessions_were_killed(bitten)  # type: ignore[arg-type]  # a stand-in Run
    assert bitten.violations == []
    catalogue._webhooks_were_dropped(calm)  # type: ignore[arg-type]  # a stand-in Run
    catalogue._webhooks_were_dropped(bitten)  # type: ignore[arg-type]  # a stand-in Run
    assert len(calm.violations) == 3 and "no webhook was dropped" in calm.violations[2]
    assert (bitten.violations, bitten.counters["webhooks dropped"]) == ([], 1)


def test_the_list_command_names_every_fault_and_those_with_rest_tenants() -> None:
    """`python -m bench.faults --list`, as docs/faults.md shows it."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "bench.faults", "--list"], cwd=root, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert set(lines) == set(FAULTS)
    assert {name for name, line in lines.items() if line.endswith("(with the two REST tenants)")} == {
        "none", "duplicates", "crash-after-commit", "crash-after-enqueue", "source-trouble", "rate-limit-storm"}
