"""The faults: each one's hooks (before, during each round, after) and its own checks; FAULTS and the sabotaged control."""
from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy import select, text

from bench.faults.host import SENT_INSIDE
from bench.faults.parts import (
    BREAKER_COOLDOWN,
    BREAKER_FAILURES,
    SCHEMES,
    Fault,
    Hook,
    RoundHook,
    Run,
    notifier,
    tail,
)
from bench.faults.run import drain
from devtools.localhost.azurite import start_azurite_queue, stop
from devtools.sandbox.notify import BACKPORT_STATUS_PROFILE
from shared.fhir.transform import TABLE_FOR_TYPE
from shared.queues.messages import CHANGES_QUEUE, RECONCILE_QUEUE, ChangeMessage, ReconcileMessage, encode
from shared.store.declared import declare, find_table
from shared.store.schema import MIRRORED_TABLES
from shared.webhooks.signatures import standard_webhooks_signature


def _two_reconciles(run: Run, round_: int, rounds: int) -> None:
    if round_ in (rounds // 4, rounds // 2):  # the same tenant twice at once, of two kinds and of one
        for tenant in run.tenants:
            for kind in ("full", "full", "incremental", "hot"):
                run.queues.send(RECONCILE_QUEUE, encode(ReconcileMessage(tenant=tenant.id, reconcile=kind)))


def _tokens_expired(run: Run) -> None:
    """The fault bit only if tokens did die under the app: expired answers, and fresh tokens after."""
    for tenant in run.tenants:
        box = tenant.sandbox
        expired, issued = box._expired_answers, len(box.tokens._expiry)
        run.count("expired-token answers", expired)
        run.count("tokens issued", issued)
    if not run.counters.get("expired-token answers"):
        run.violations.append("no request met an expired token: the fault did not bite")


def _overlapping_reconcile(run: Run, round_: int, rounds: int) -> None:
    if round_ % 5 == 1:
        for tenant in run.tenants:
            kind = ("incremental", "full", "hot")[round_ % 3]
            run.queues.send(RECONCILE_QUEUE, encode(ReconcileMessage(tenant=tenant.id, reconcile=kind)))


POISON_PER_RUN = 12


def _poison(run: Run, round_: int, rounds: int) -> None:
    if round_ % 5 == 0:  # not JSON, not a message of ours, an unknown tenant's change
        for text_ in ("not json", '{"kind": "change"}',
                      encode(ChangeMessage(tenant="nobody", type="Patient", id="PT-1"))):
            run.queues.send(CHANGES_QUEUE, text_)


def _storm(on: bool) -> Hook:
    def hook(run: Run) -> None:
        host_log = [] if on else tail(run.host.log, 100_000).splitlines()
        for index, tenant in enumerate(run.tenants):
            # 30 requests a minute per client, then 429 with Retry-After. The first tenant's source
            # advertises its budget (x-ratelimit-*: the app paces itself); the others' do not, so
            # their clients learn of the limit only from the 429s and must honour each Retry-After.
            # Afterwards a generous limit, advertised by all (the app would keep the storm's limit
            # for ten minutes if none were sent).
            box = tenant.sandbox
            box.config.rate_limit = box.limiter.limit = 30 if on else 3000
            box.config.advertise_limit = index == 0 or not on
            if on:
                box.limiter.watch = _watching(run, tenant.id)
                continue
            box.limiter.watch = None  # the watch ends with the storm: the counts below are final
            refused = run.counters.get(f"429s {tenant.id}", 0)
            # The silent sources must refuse some (the app learns their limit no other way); t0's
            # may refuse none: the app can pace itself by the budget it advertises from the start.
            # A REST source is asked only by the fulls queued in the storm (its events carry the
            # record): whether they meet the limit depends on when they run, so its 429s are
            # reported, and only the Retry-After check below is asked of it.
            if index > 0 and not refused and not tenant.rest:
                run.violations.append(f"{tenant.id}: no request was answered 429: the storm did not bite")
            # Every worker in flight may meet the first 429 (a batch of 16 + 8); after that the
            # Retry-After is shared through the database (a process's copy is ≤ 1 s old), so a
            # second wave is all that may still come before everyone waits.
            if index == 0 and refused > STORM_BOUND:
                run.violations.append(f"{tenant.id}: {refused} requests answered 429 in one Retry-After "
                                      f"window (bound {STORM_BOUND})")
            origin = urlsplit(box.base_url).netloc
            sent = [line for line in host_log if line.startswith(f"{SENT_INSIDE}: {origin} ")]
            if sent:
                run.violations.append(f"{tenant.id}: the app sent {len(sent)} requests after a 429 had reached it, "
                                      f"inside the Retry-After it named (first: {sent[0]})")
    return hook


STORM_BOUND = 2 * 24
HOLD_GRACE = 1.5  # the source's view: requests already in flight when it answered 429


def _watching(run: Run, tenant_id: str) -> Callable[[str, float, tuple[bool, int, int]], None]:
    """Count the 429s, and the requests that arrive well inside a Retry-After announced earlier
    (from HOLD_GRACE after the 429 until the time it named). Those are reported, not failed: on a
    loaded machine a request the app sent before the 429 reached it can arrive this late (its
    answer and this process both wait for a CPU). Whether the app sent any after it had the 429
    is the host's log's to say (HoldWatch). The sandbox's limiter calls it with each decision and
    the (monotonic) time the request arrived."""
    holds: list[tuple[float, float]] = []  # (announced at, until), monotonic like the sandbox's limiter
    lock = threading.Lock()

    def watched(client: str, now: float, verdict: tuple[bool, int, int]) -> None:
        with lock:
            into = max((now - at for at, until in holds if at + HOLD_GRACE <= now < until - 0.05), default=None)
        if into is not None:  # sent before the app had the 429, or the host's log says otherwise
            run.count(f"arrived late in a Retry-After {tenant_id}")
            run.peak(f"latest ms into one {tenant_id}", round(into * 1000))
        if not verdict[0]:
            run.count(f"429s {tenant_id}")
            with lock:
                holds.append((now, now + verdict[2]))
    return watched


def _rest_reconciles(rounds: tuple[int, ...]) -> RoundHook:
    """Full reconciles of the REST tenants in these rounds: their webhooks carry the record, so
    only a listing asks their source anything (and meets its trouble or its rate limit)."""
    def hook(run: Run, round_: int, rounds_: int) -> None:
        if round_ in rounds:
            for tenant in run.tenants:
                if tenant.rest:
                    run.queues.send(RECONCILE_QUEUE, encode(ReconcileMessage(tenant=tenant.id, reconcile="full")))
    return hook


def _both(*hooks: RoundHook) -> RoundHook:
    def hook(run: Run, round_: int, rounds: int) -> None:
        for each in hooks:
            each(run, round_, rounds)
    return hook


def _trouble(on: bool) -> Hook:
    def hook(run: Run) -> None:
        box = run.tenants[0].sandbox
        rest = [t.sandbox for t in run.tenants if t.rest]  # flaky too (not down), listed by the reconciles
        if on:  # 10% held for 3 s and dropped unanswered: past the app's 1 s timeout (SYNC_SOURCE_TIMEOUT)
            for each in (box, *rest):
                flaky = each.config.faults
                flaky.error_rate, flaky.drop_rate, flaky.latency_ms, flaky.hang_rate, flaky.hang_ms = 0.2, 0.1, 300, 0.1, 3000
        else:
            # The reconciles queued during the rounds page through the flaky source first.
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline and run.queues.count(RECONCILE_QUEUE):
                run.host.check()
                time.sleep(0.5)
            for each in (box, *rest):
                flaky = each.config.faults
                flaky.error_rate, flaky.drop_rate, flaky.latency_ms, flaky.hang_rate = 0.0, 0.0, 0, 0.0
            if rest:
                run.count("requests to the flaky REST sources", sum(each.requests for each in rest))
                run.count("timed-out REST requests", sum(each.hangs for each in rest))
            run.count("requests to the flaky source", box.requests)
            run.count("timed-out requests", box.hangs)
            if not box.hangs:
                run.violations.append("no request hung: the timeouts were not exercised")
    return hook


OUTAGE_ROUNDS = range(8, 12)  # source-trouble: the first tenant's source answers only 5xx
OUTAGE_HOLD = 1.5  # extra seconds per outage round, so the outage outlasts a few breaker cooldowns


def _outage(run: Run, round_: int, rounds: int) -> None:
    """Flaky throughout; in the middle rounds down altogether. While it is down the breaker must
    open and then let one probe through per cooldown: the requests it gets are bounded."""
    box = run.tenants[0].sandbox
    if round_ in (1, 4, 13, 16):  # reconciles page through the flaky source (webhooks alone ask it little)
        run.queues.send(RECONCILE_QUEUE, encode(ReconcileMessage(tenant=run.tenants[0].id,
                                                                 reconcile="full" if round_ == 1 else "hot")))
    if round_ == OUTAGE_ROUNDS[0]:
        box.config.faults.error_rate, box.config.faults.drop_rate, box.config.faults.latency_ms = 1.0, 0.0, 0
        box.config.faults.hang_rate = 0.0
        run.outage = {"requests": box.requests, "began": time.monotonic(), "states": [],
                      "watch": threading.Event()}
        threading.Thread(target=_watch_breaker, args=(run,), daemon=True).start()
    if round_ in OUTAGE_ROUNDS:
        time.sleep(OUTAGE_HOLD)
    if round_ == OUTAGE_ROUNDS[-1]:
        outage = run.outage
        outage["watch"].set()
        requests = box.requests - outage["requests"]
        seconds = time.monotonic() - outage["began"]
        states = outage["states"]
        opened = sum(1 for a, b in itertools.pairwise(["closed", *states]) if b == "open" and a != "open")
        # K failures open it; what was already in flight (a batch of 16 + 8 more) may still fail;
        # then one probe per cooldown (2 s in the harness) and its token request.
        bound = BREAKER_FAILURES + 24 + 2 * (int(seconds / BREAKER_COOLDOWN) + 1)
        run.count("outage requests", requests)
        run.count("outage bound", bound)
        run.count("breaker opened", opened)
        if requests > bound:
            run.violations.append(f"{requests} requests reached a source that was down for {seconds:.1f} s "
                                  f"(bound {bound})")
        if not opened:
            run.violations.append(f"the breaker never opened in a {seconds:.1f} s outage")
        _trouble(True)(run)


def _watch_breaker(run: Run) -> None:
    states: list[str] = run.outage["states"]
    while not run.outage["watch"].is_set():
        with run.engine.connect() as conn:
            state = conn.execute(text("SELECT state FROM source_health WHERE breaker_key LIKE 't0|%'")).scalar()
        if state and (not states or states[-1] != state):
            states.append(state)
        time.sleep(0.02)


def _many_workers_one_key(run: Run, round_: int, rounds: int) -> None:
    """Change one record many times while many copies of its change message queue up."""
    for tenant in run.tenants:
        for _ in range(5):
            change = tenant.sandbox.data.revise("Appointment", tenant.sandbox.data.first_live("Appointment"))
            run.extra_events += 1
            notifier(tenant).notify([change])
            for _ in range(2):
                run.queues.send(CHANGES_QUEUE, encode(ChangeMessage(tenant=tenant.id, type="Appointment",
                                                                    id=change.id)))


def _queue_down(run: Run, round_: int, rounds: int) -> None:
    """Azurite stopped for 3 s twice while webhooks arrive, then started again with its queues."""
    if round_ not in (rounds // 4, rounds // 2):
        return
    stop(run.azurite["proc"])
    time.sleep(3)
    run.azurite["proc"], _url = start_azurite_queue(run.azurite["log"], port=run.azurite["port"],
                                                    location=run.azurite["folder"])


def _queue_was_down(run: Run) -> None:
    """queue-down bit only if webhooks met it: deliveries answered 503 (or not at all) and re-sent."""
    resent = sum(d["attempts"] - 1 for t in run.tenants for d in notifier(t).deliveries()
                 if d["attempts"] > 1)
    run.count("deliveries re-sent", resent)
    if not resent:
        run.violations.append("no webhook met the queue down: the fault did not bite")


def _webhooks_were_dropped(run: Run) -> None:
    dropped = sum(d["status"] == "dropped" for t in run.tenants for d in notifier(t).deliveries())
    run.count("webhooks dropped", dropped)
    if not dropped:
        run.violations.append("no webhook was dropped: the fault did not bite")


def _sessions_were_killed(run: Run) -> None:
    if not run.counters.get("sessions killed"):
        run.violations.append("no database session was terminated: the fault did not bite")


def _kill_database_sessions(run: Run, round_: int, rounds: int) -> None:
    """Every other round: terminate every PostgreSQL session of the app, mid-statement or not; a full
    reconcile of every tenant is queued first, so that some die in the middle of its batches."""
    if round_ == 0:
        for tenant in run.tenants:
            run.queues.send(RECONCILE_QUEUE, encode(ReconcileMessage(tenant=tenant.id, reconcile="full")))
    if round_ % 2:
        return
    with run.engine.connect() as conn:
        killed = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one()
        conn.rollback()
    run.count("sessions killed", int(killed))


def _replay_old(run: Run, round_: int, rounds: int) -> None:
    """Captured deliveries sent again with their timestamps past the 5-minute tolerance (signed with
    the right secret, as a replayed capture is); and, within it, the same message id again."""
    tenant = run.tenants[2]  # standard-webhooks: id + timestamp + signature
    delivered = [d for d in notifier(tenant).deliveries() if d["status"] == "delivered"][-10:]
    for d in delivered:
        body = json.dumps({"event": f"{d['type'].lower()}.{d['action']}", "type": f"{d['type'].lower()}.{d['action']}",
                           "timestamp": "2026-01-01T00:00:00Z",
                           "data": {"resourceType": d["type"], "id": d["id"], "versionId": str(int(d["version"]) - 1)}},
                          separators=(",", ":")).encode()
        stamp, msg_id = int(time.time()) - 301 - run.rng.randrange(3600), f"msg_replay_{run.rng.randrange(10**9)}"
        headers = {"Content-Type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(stamp),
                   "webhook-signature": standard_webhooks_signature(tenant.secret, msg_id, stamp, body)}
        status = run.send_webhook(tenant, f"{d['type'].lower()}-{d['action']}", body, headers)
        if status == 401:
            run.count("replays refused")
        else:
            run.violations.append(f"a replay past the tolerance was answered {status}")


def _oversized(run: Run, round_: int, rounds: int) -> None:
    """One Backport notification carrying every appointment this round changed at the first tenant
    (each event becomes its own small queue message), and one padded past the 256 KiB limit (413:
    not acknowledged, so the sender keeps it; the reconcile repairs what it carried)."""
    tenant = run.tenants[0]
    recent = [d for d in notifier(tenant).deliveries()
              if d["type"] == "Appointment" and d["action"] == "update"][-40:]
    if not recent:
        return
    events = [{"name": "notification-event", "part": [
        {"name": "event-number", "valueString": str(d["event_number"])},
        {"name": "focus", "valueReference": {"reference": f"Appointment/{d['id']}"}}]} for d in recent]
    for pad in (0, 300 * 1024):
        status = {"resourceType": "Parameters", "meta": {"profile": [BACKPORT_STATUS_PROFILE]}, "parameter": [
            {"name": "subscription", "valueReference": {"reference": f"{tenant.sandbox.base_url}/Subscription/bulk"}},
            {"name": "type", "valueCode": "event-notification"}, *events,
            *([{"name": "padding", "valueString": "x" * pad}] if pad else [])]}
        bundle = {"resourceType": "Bundle", "type": "history", "entry": [{"resource": status}]}
        body = json.dumps(bundle).encode()
        answer = run.send_webhook(tenant, "appointment-update", body, {
            "Content-Type": "application/fhir+json", dict(SCHEMES)[tenant.scheme]: tenant.secret})
        if answer == (413 if pad else 202):
            run.count("oversized refused" if pad else "bundles accepted")
        else:
            run.violations.append(f"a {len(body):,}-byte notification was answered {answer}")


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("none", "no fault: the control", rest=True),
    Fault("duplicates", "every webhook sent 2 to 10 times (2 + seed mod 9)",
          notifier=lambda seed: {"repeat": 2 + seed % 9}, rest=True),
    Fault("shuffled", "webhooks of each round sent in shuffled order from 4 threads",
          notifier={"shuffle": True, "senders": 4}),
    Fault("dropped-webhooks", "1% of webhooks never sent; the next reconcile repairs them",
          notifier={"drop_rate": 0.01}, after=_webhooks_were_dropped),
    Fault("many-workers-one-key", "one record per tenant changed 5 times a round, 2 extra messages each",
          during=_many_workers_one_key),
    Fault("poison", "malformed and foreign messages on the changes queue", during=_poison,
          poison=lambda run: POISON_PER_RUN),
    Fault("rate-limit-storm", "the sources answer 429 with Retry-After beyond 30 requests a minute; two of "
          "the three do not advertise their limit",
          before=_storm(True), during=_rest_reconciles((2, 8, 14)), after=_storm(False), rest=True),
    Fault("source-trouble", "one source: 20% 5xx, 10% dropped connections, 10% timeouts, 300 ms latency; "
          "down for 4 rounds; the REST sources flaky too", before=_trouble(True),
          during=_both(_outage, _rest_reconciles((1, 4, 13, 16))), after=_trouble(False),
          env={"SYNC_SOURCE_TIMEOUT": "1"}, rest=True),
    Fault("token-expiry", "tokens die after 2 s, mid-reconcile and mid-apply", sandbox={"token_ttl": 2.0},
          during=_overlapping_reconcile, after=_tokens_expired),
    Fault("overlapping-reconciles", "incremental, full and hot reconciles while webhooks flow",
          during=_overlapping_reconcile),
    Fault("two-reconciles-at-once", "two fulls, an incremental and a hot of each tenant queued together",
          during=_two_reconciles),
    Fault("bad-credentials", "one tenant's client secret is wrong; the others keep syncing", bad_tenant=True),
    Fault("replay-after-tolerance", "signed deliveries replayed with timestamps past the 5-minute tolerance",
          during=_replay_old),
    Fault("queue-down", "Azurite stopped for 3 s, twice, while webhooks arrive", during=_queue_down,
          after=_queue_was_down),
    Fault("database-killed", "every PostgreSQL session of the app terminated every other round",
          during=_kill_database_sessions, after=_sessions_were_killed, databases=("postgresql",)),
    Fault("oversized-notification", "notifications of 40 events, and past the 256 KiB limit",
          during=_oversized),
    Fault("crash-after-commit", "the worker dies after committing a change, before deleting its message",
          failpoints="apply.after_commit=crash:0.01", rest=True),
    Fault("crash-after-enqueue", "the host dies after enqueuing a webhook, before answering it",
          failpoints="webhook.after_enqueue=crash:0.01", rest=True),
)}


# A harness that cannot fail proves nothing: this case breaks the mirror on purpose behind the
# app's back (a row an acknowledged webhook wrote is deleted, another is put back to an older
# version, a third looks like another tenant's copy) and tests/e2e/test_faults.py checks that
# lost, regressions and unexpected say so. Not in the matrix.
def _sabotage(run: Run) -> None:
    tenant = run.tenants[0]
    notifier(tenant).drain(60)
    drain(run)
    table_ = MIRRORED_TABLES[TABLE_FOR_TYPE["Appointment"]]
    written = [d for d in notifier(tenant).deliveries()
               if d["status"] == "delivered" and d["type"] == "Appointment" and d["action"] == "update"]
    victim, older = written[-1]["id"], written[-2]["id"]
    with run.engine.begin() as conn:
        mine = (table_.c.tenant_id == tenant.id)
        conn.execute(table_.delete().where(mine & (table_.c.source_id == victim)))
        at, seq = conn.execute(select(table_.c.source_updated_at, table_.c.source_version_seq).where(
            mine & (table_.c.source_id == older))).one()
        conn.execute(table_.update().where(mine & (table_.c.source_id == older)).values(
            source_updated_at=at - timedelta(days=1), source_version_seq=(seq or 1) - 1))
        # And one row as another tenant's copy would look: same id and version, a later
        # lastUpdated — the version guard keeps it through the reconcile; only its content differs.
        patients = MIRRORED_TABLES[TABLE_FOR_TYPE["Patient"]]
        crossed, at = conn.execute(select(patients.c.source_id, patients.c.source_updated_at).where(
            patients.c.tenant_id == tenant.id, patients.c.deleted_at.is_(None)).limit(1)).one()
        conn.execute(patients.update().where((patients.c.tenant_id == tenant.id) & (patients.c.source_id == crossed))
                     .values(source_updated_at=at + timedelta(days=1)))
    # A REST tenant's record an acknowledged event wrote, given other content at the same version.
    rest = next(t for t in run.tenants if t.rest)
    notifier(rest).drain(60)
    entity = rest.settings().rest_spec().entities[0]
    declare([rest.settings().rest_spec()])
    facilities = find_table(entity.table_name)
    victim = [d for d in notifier(rest).deliveries() if d["status"] == "delivered" and d["action"] == "updated"][-1]["id"]
    with run.engine.begin() as conn:
        conn.execute(facilities.update().where((facilities.c.tenant_id == rest.id) & (facilities.c.source_id == victim))
                     .values(record=json.dumps({"sabotaged": True})))


SABOTAGE = Fault("sabotage", "the harness's own check: the mirror is damaged behind the app's back", after=_sabotage,
                 rest=True)
