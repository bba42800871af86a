"""Dashboard read latency at size: 1,000 practitioners, 100,000 clients, 1,000,000 sessions.

    python -m bench.dashboard [--database sqlite postgresql] [--reads 1000] [--sessions 1000000]

Loads a fresh database (sessions over two years, one invoice per five sessions, a year-long
referral with a 10-session limit for every other client), then reads the
dashboard of a random practitioner on a random day ``--reads`` times, each on a pooled
connection as the HTTP function does, and prints p50/p95/p99. The baseline, run in the same
process on the same data: one primary-key read of a practitioner (the least any read costs).
"""
from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine, insert, select, text

from bench.common import DEFAULT_POSTGRES_URL, percentile, postgres_engine, sqlite_engine
from shared.reads.dashboard import practitioner_dashboard
from shared.settings import TenantConfig
from shared.store.schema import clients, invoices, practitioners, referrals, sessions

TENANT = TenantConfig(id="bench", name="Bench", timezone="Australia/Sydney", fhir_base_url="http://127.0.0.1:9/main",
                      client_id="c", client_secret="s")
FIRST_DAY = date(2025, 1, 1)
DAYS = 730
STATUSES = ["attended"] * 6 + ["booked"] * 2 + ["cancelled", "no_show"]
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def bookkeeping(source_id: str) -> dict[str, object]:
    return {"tenant_id": TENANT.id, "source_id": source_id, "source_updated_at": T0, "content_hash": "0" * 32,
            "last_synced_at": T0}


def referral(client: int, rng: random.Random, n_practitioners: int) -> dict[str, object]:
    """A year-long 10-session plan; three in four assigned to the client's practitioner."""
    first = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
    return {**bookkeeping(f"RF-{client}"), "client_id": f"PT-{client}", "status": "active", "name": "Care plan",
            "practitioner_id": f"PR-{client % n_practitioners}" if client % 4 else None, "starts_on": first,
            "ends_on": first + timedelta(days=365), "session_limit": 10, "prior_sessions": rng.choice((0, 0, 2)),
            "preferred": True}


def load(engine: Engine, n_practitioners: int, n_clients: int, n_sessions: int, chunk: int = 20_000) -> None:
    rng = random.Random(7)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(insert(practitioners), [{**bookkeeping(f"PR-{p}"), "display_name": f"Dr {p}", "active": True}
                                             for p in range(n_practitioners)])
        for lo in range(0, n_clients, chunk):
            conn.execute(insert(clients), [{**bookkeeping(f"PT-{c}"), "practitioner_id": f"PR-{c % n_practitioners}",
                                            "initials": "AB", "active": True}
                                           for c in range(lo, min(lo + chunk, n_clients))])
            conn.execute(insert(referrals), [referral(c, rng, n_practitioners)
                                             for c in range(lo, min(lo + chunk, n_clients), 2)])
    for lo in range(0, n_sessions, chunk):
        batch, bills = [], []
        for s in range(lo, min(lo + chunk, n_sessions)):
            client = s % n_clients
            start = T0 + timedelta(days=rng.randrange(DAYS), hours=rng.randrange(-2, 8))  # 08:00–18:00 Sydney
            practitioner = f"PR-{client % n_practitioners}"
            batch.append({**bookkeeping(f"AP-{s}"), "practitioner_id": practitioner, "client_id": f"PT-{client}",
                          "start_at": start, "end_at": start + timedelta(minutes=50), "status": rng.choice(STATUSES),
                          "service": "Consult"})
            if s % 5 == 0:
                bills.append({**bookkeeping(f"IN-{s}"), "practitioner_id": practitioner, "client_id": f"PT-{client}",
                              "issued_at": start, "status": "paid", "total_gross": Decimal("150.00"),
                              "currency": "AUD"})
        with engine.begin() as conn:
            conn.execute(insert(sessions), batch)
            conn.execute(insert(invoices), bills)
        print(f"\r  loaded {min(lo + chunk, n_sessions):,} / {n_sessions:,} sessions "
              f"({min(lo + chunk, n_sessions) / (time.perf_counter() - started):,.0f}/s)", end="", flush=True)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    print()


def measure(engine: Engine, reads: int, n_practitioners: int) -> tuple[list[float], list[float], float]:
    """Dashboard and baseline read times, and the share of sessions shown with a care plan."""
    rng = random.Random(11)
    shown = planned = 0
    now = datetime(2026, 1, 15, 3, tzinfo=UTC)
    boards, baseline = [], []
    p = practitioners.c
    for _ in range(reads):
        practitioner = f"PR-{rng.randrange(n_practitioners)}"
        day = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
        t = time.perf_counter()
        with engine.connect() as conn:
            board = practitioner_dashboard(conn, TENANT, practitioner, day, now)
        boards.append(time.perf_counter() - t)
        assert board is not None
        shown += len(board["sessions"])
        planned += sum(1 for x in board["sessions"] if x["carePlan"])
        t = time.perf_counter()
        with engine.connect() as conn:
            conn.execute(select(p.display_name).where(p.tenant_id == TENANT.id, p.source_id == practitioner)).one()
        baseline.append(time.perf_counter() - t)
    return boards, baseline, planned / max(shown, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"])
    parser.add_argument("--reads", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args()
    n_practitioners, n_clients = 1000, max(args.sessions // 10, 1)
    for database in args.database:
        ctx = sqlite_engine() if database == "sqlite" else postgres_engine(args.postgres_url, "fhir_mirror_bench_dash")
        with ctx as engine:
            print(f"{database}: {n_practitioners:,} practitioners, {n_clients:,} clients, {args.sessions:,} sessions")
            load(engine, n_practitioners, n_clients, args.sessions)
            measure(engine, 50, n_practitioners)  # warm the caches and the pool
            boards, baseline, planned = measure(engine, args.reads, n_practitioners)
            ms = [b * 1000 for b in boards]
            base = statistics.median(baseline) * 1000
            print(f"  dashboard ({args.reads:,} reads): p50 {percentile(ms, .5):.2f} ms, "
                  f"p95 {percentile(ms, .95):.2f} ms, p99 {percentile(ms, .99):.2f} ms, max {max(ms):.2f} ms "
                  f"(goal p99 <= 20 ms); {planned:.0%} of the sessions shown had a care plan")
            print(f"  baseline, one primary-key read: p50 {base:.2f} ms; dashboard p50 = "
                  f"{percentile(ms, .5) / base:.1f}x baseline")


if __name__ == "__main__":
    main()
