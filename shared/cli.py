"""Command line: ``python -m shared.cli [--database-url URL] [--tenants-file F] COMMAND …``.

Exit codes: 0 done; 1 done, but some resources could not be mapped (listed); 2 nothing or only
part was done because of bad input or configuration (the message says what to fix); 130 / 143
``serve --once`` stopped by Ctrl-C / SIGTERM before its cycle finished.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from shared.settings import Settings, SettingsError, TenantConfig, load_settings

EXIT_OK, EXIT_PARTIAL, EXIT_FAILED = 0, 1, 2


class CliError(Exception):
    """A failure the user can fix; the message says what and how."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shared.cli", description="FHIR mirror sync service")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: SYNC_DATABASE_URL or ./.data/mirror.db)")
    parser.add_argument("--tenants-file", type=Path, help="tenants JSON file (default: SYNC_TENANTS_FILE)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("migrate", help="create or upgrade the database schema (alembic upgrade head)")

    load = commands.add_parser("load", help="backfill a tenant from FHIR Bundles or NDJSON files")
    load.add_argument("--tenant", required=True, help="tenant id from the tenants file")
    load.add_argument("--batch-size", type=int, help="rows per transaction (default: SYNC_UPSERT_BATCH_SIZE)")
    load.add_argument("files", nargs="+", type=Path, metavar="FILE",
                      help=".json (Bundle or resource), .ndjson/.jsonl, optionally .gz")

    reconcile = commands.add_parser("reconcile", help="run one reconcile of a tenant in the foreground")
    reconcile.add_argument("--tenant", required=True, help="tenant id from the tenants file")
    reconcile.add_argument("--kind", choices=("incremental", "hot", "full"), default="incremental")
    reconcile.add_argument("--page-size", type=int, default=100, help="_count per page (1-1000)")

    serve = commands.add_parser("serve", help="run function_app.py locally: HTTP on 127.0.0.1, timers, queues "
                                "(with no tenants: the bundled sandbox as tenant 'demo')")
    serve.add_argument("--port", type=int, default=7071, help="HTTP port on 127.0.0.1 (default 7071; 0 = any free)")
    serve.add_argument("--once", action="store_true",
                       help="demo only: full reconcile, churn with webhooks, drain, full reconcile; "
                            "exit 0 only if the mirror equals the sandbox")

    commands.add_parser("tenants", help="validate the tenants configuration and list tenants (no secrets)")

    generate = commands.add_parser("generate", help="write deterministic synthetic FHIR data (NDJSON or a Bundle)")
    generate.add_argument("--out", type=Path, required=True, help="output file: .ndjson or .json (a collection Bundle)")
    generate.add_argument("--seed", type=int, default=1)
    generate.add_argument("--practitioners", type=int, default=5)
    generate.add_argument("--patients", type=int, default=50)
    generate.add_argument("--appointments", type=int, default=200)
    generate.add_argument("--invoices", type=int, default=100)
    generate.add_argument("--referrals", type=int, help="default: one for every other patient")
    generate.add_argument("--anchor", help="ISO date the data is centred on (default: today)")
    sandbox = commands.add_parser("sandbox", help="serve a Halaxy-like FHIR R4 sandbox on 127.0.0.1")
    sandbox.add_argument("--port", type=int, default=7072)
    sandbox.add_argument("--seed", type=int, default=1)
    sandbox.add_argument("--practitioners", type=int, default=5)
    sandbox.add_argument("--patients", type=int, default=200)
    sandbox.add_argument("--appointments", type=int, default=1000)
    sandbox.add_argument("--invoices", type=int, default=400)
    sandbox.add_argument("--referrals", type=int, help="default: one for every other patient")
    sandbox.add_argument("--anchor", help="ISO date the data is centred on (default: today)")
    sandbox.add_argument("--client-id", default="sandbox-client")
    sandbox.add_argument("--client-secret", default="sandbox-secret")
    sandbox.add_argument("--token-ttl", type=float, default=900.0, help="seconds a token lives (Halaxy: 900)")
    sandbox.add_argument("--rate-limit", default="500/min", help="requests per minute per client, e.g. 300/min; 0 = none")
    sandbox.add_argument("--fault-rate", type=float, default=0.0, help="share of requests answered 500/502/503")
    sandbox.add_argument("--drop-rate", type=float, default=0.0, help="share of connections reset without answer")
    sandbox.add_argument("--latency-ms", type=int, default=0, help="added to every request")
    sandbox.add_argument("--expired-style", choices=("401", "outcome", "mixed"), default="mixed")
    sandbox.add_argument("--webhook-url", help="where churn sends notifications ({event} is replaced), loopback only")
    sandbox.add_argument("--webhook-scheme", choices=("halaxy", "hmac-sha256", "standard-webhooks"), default="halaxy")
    sandbox.add_argument("--webhook-secret", help="static secret, HMAC key, or whsec_… secret")
    sandbox.add_argument("--webhook-header", default="", help="header for the halaxy secret / the hex HMAC")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        overrides: dict[str, Any] = {}
        if args.database_url:
            overrides["database_url"] = args.database_url
        if args.tenants_file:
            overrides["tenants_file"] = args.tenants_file
        settings = load_settings(**overrides)
        return COMMANDS[args.command](settings, args)
    except (SettingsError, CliError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except DBAPIError as exc:
        # Only the driver's first line (no table, cannot connect, value too long): SQLAlchemy's
        # full text repeats the statement's parameters, which can be patient data.
        first_line = (str(exc.orig).strip().splitlines() or [""])[0]
        if exc.statement is None or args.command == "migrate":  # failed connecting, or migrate itself
            advice = ("cannot use the database: check --database-url (or SYNC_DATABASE_URL), that the server "
                      "runs and answers, and the login's rights")
        else:
            advice = "check --database-url, and run `python -m shared.cli migrate` first"
        print(f"error: database: {exc.orig.__class__.__name__}: {first_line}\n       {advice}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        if settings_debug():
            raise
        print(f"error: internal error ({exc.__class__.__name__}); rerun with SYNC_LOG_LEVEL=DEBUG "
              "for a traceback and report it", file=sys.stderr)
        return EXIT_FAILED


def settings_debug() -> bool:
    try:
        return load_settings().log_level == "DEBUG"
    except SettingsError:
        return False


def _find_tenant(settings: Settings, tenant_id: str) -> TenantConfig:
    tenants = settings.load_tenants()
    for tenant in tenants:
        if tenant.id == tenant_id:
            return tenant
    known = ", ".join(t.id for t in tenants) or "none configured"
    raise CliError(f"unknown tenant {tenant_id!r} (known: {known}); add it to the tenants file "
                   "given by --tenants-file or SYNC_TENANTS_FILE")


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from shared.store.engine import safe_url
    from shared.store.migrate import migrate

    migrate(settings)
    print(f"database at head: {safe_url(settings.database_url)}")
    return EXIT_OK


def cmd_load(settings: Settings, args: argparse.Namespace) -> int:
    from shared.importer.load import LoadAborted, load_files
    from shared.store.engine import create_store_engine, write_transaction
    from shared.store.tenants import sync_tenants

    unreadable = [f"{path}: " + ("a directory, not a file" if path.is_dir() else "no such file" if not path.exists()
                                 else "not a regular file")
                  for path in args.files if not path.is_file()]
    if unreadable:
        raise CliError("; ".join(unreadable) + ". Nothing was loaded")
    tenant = _find_tenant(settings, args.tenant)
    batch_size = args.batch_size if args.batch_size is not None else settings.upsert_batch_size
    if batch_size < 1:
        raise CliError(f"--batch-size {batch_size}: must be at least 1")
    engine = create_store_engine(settings)
    try:
        with write_transaction(engine) as conn:
            sync_tenants(conn, [tenant])
        try:
            report = load_files(engine, tenant.id, args.files, batch_size=batch_size)
        except LoadAborted as exc:
            _print_summary(exc.report)
            done = exc.report.committed_through
            raise CliError(
                f"tenant {tenant.id}: {exc.error}. Nothing of the batch holding it was written"
                + (f" (committed through {done})" if done else " (nothing was committed)")
                + ". Fix or remove that entry and run load again: re-loading is idempotent."
            ) from None
    finally:
        engine.dispose()
    _print_summary(report)
    return EXIT_PARTIAL if report.errored else EXIT_OK


def _print_summary(report: Any) -> None:
    counts = report.counts.as_dict()
    print(f"tenant {report.tenant_id}: {report.files} file(s), {report.entries:,} entries")
    print("  " + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + f", errored {report.errored:,}")
    if report.skipped:
        print("  skipped (types not mirrored): " + ", ".join(f"{t} {n:,}" for t, n in sorted(report.skipped.items())))
    for line in report.errors:
        print(f"  could not map {line}")
    if report.errored > len(report.errors):
        print(f"  … and {report.errored - len(report.errors):,} more")
    if report.errored:
        print("  fix these resources at the source (or the export) and load again; the others are stored")


def cmd_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio
    from datetime import timedelta

    import httpx

    from shared.importer.progress import CountProgress
    from shared.source.errors import SourceError, TransientError
    from shared.source.registry import SourceRegistry, source_options
    from shared.store.engine import create_store_engine, write_transaction
    from shared.store.health import DatabaseBreakerStore
    from shared.store.tenants import sync_tenants
    from shared.sync.reconcile import run_reconcile
    from shared.sync.runs import RunActive, load_position, reap_stale, start_run

    tenant = _find_tenant(settings, args.tenant)
    if not 1 <= args.page_size <= 1000:
        raise CliError("--page-size must be between 1 and 1000")
    engine = create_store_engine(settings)
    progress = CountProgress(f"reconcile {tenant.id} {args.kind}")
    try:
        with write_transaction(engine) as conn:
            sync_tenants(conn, [tenant])
            reap_stale(conn, older_than=timedelta(minutes=15))
            try:
                lease = start_run(conn, tenant.id, args.kind)
            except RunActive as exc:
                raise CliError(f"{exc}: wait for it to finish, or let the reaper fail it after 15 minutes "
                               "without a heartbeat") from None

        async def run() -> None:
            async with httpx.AsyncClient(timeout=httpx.Timeout(settings.source_timeout)) as http:
                client = SourceRegistry(http, DatabaseBreakerStore(engine),
                                        **source_options(settings)).client(tenant)
                await run_reconcile(engine, client, tenant, lease, page_size=args.page_size,
                                    on_progress=lambda p: progress.update(p.done, p.total, p.step))

        try:
            asyncio.run(run())
        except SourceError as exc:
            url, held = str(tenant.fhir_base_url), getattr(exc, "retry_at", None)
            if exc.unreachable:
                hint = (f"\n       nothing answers at {url}: is the source running, and the URL right? For the "
                        f"bundled sandbox, start it first: python -m shared.cli sandbox --port {_port_of(url)}")
            elif isinstance(exc, TransientError) and held:
                hint = (f"\n       check the source at {url}; this tenant's requests are held until "
                        f"{datetime.fromtimestamp(held).strftime('%H:%M:%S')}")
            else:
                hint = ""
            raise CliError(f"{exc}. The run is recorded as failed; it is safe to run again once the source "
                           f"answers (nothing committed is lost){hint}") from None
        with engine.connect() as conn:
            _position, counts = load_position(conn, lease)
    finally:
        engine.dispose()
    progress.update(counts.processed, counts.processed, final=True)
    print(f"tenant {tenant.id}: {args.kind} reconcile completed (run {lease.run_id})")
    print("  " + ", ".join(f"{k} {v:,}" for k, v in counts.as_dict().items()))
    return EXIT_PARTIAL if counts.errored else EXIT_OK


def _interrupt(signum: int, _frame: object) -> None:
    from shared.localhost.serve import Interrupted

    raise Interrupted(signum)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import logging

    from shared.localhost.serve import serve, stopped

    if not 0 <= args.port <= 65535:
        raise CliError("--port must be between 0 and 65535")
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.log_level != "DEBUG":
        # One line per HTTP request, migration step, webhook, applied change or timer tick buries
        # what a person needs to see; SYNC_LOG_LEVEL=DEBUG shows them.
        for name in ("httpx", "alembic", "shared.events"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if args.once and settings.log_level != "DEBUG":
        for name in ("shared.functions", "shared.webhooks", "shared.telemetry"):
            logging.getLogger(name).setLevel(logging.WARNING)
    # SIGTERM (a service manager, a container stop, a test) stops like Ctrl-C; SIGINT is set too,
    # since a shell without job control starts background children with SIGINT ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        return serve(settings, port=args.port, once=args.once, say=lambda line: print(line, flush=True))
    except KeyboardInterrupt as stop:  # while starting, before serve() could catch it
        return stopped(stop, args.once, lambda line: print(line, flush=True))
    except OSError as exc:
        raise CliError(f"cannot listen on 127.0.0.1:{args.port} ({exc.strerror}); "
                       "is another host running? choose another --port") from None


def cmd_tenants(settings: Settings, _args: argparse.Namespace) -> int:
    tenants = settings.load_tenants()
    for t in tenants:
        print(f"{t.id}\t{t.name}\t{t.timezone}\t{t.webhook_scheme}\t{len(t.webhook_secrets)} webhook secret(s)\t"
              f"{'enabled' if t.enabled else 'disabled'}\t{t.fhir_base_url}")
    print(f"{len(tenants)} tenant(s) valid", file=sys.stderr)
    return EXIT_OK


def cmd_generate(_settings: Settings, args: argparse.Namespace) -> int:
    from shared.fhir.synthetic import SyntheticCounts, generate

    anchor = _anchor(args.anchor)
    counts = SyntheticCounts(args.practitioners, args.patients, args.appointments, args.invoices, args.referrals)
    resources = generate(counts, seed=args.seed, anchor=anchor)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with args.out.open("w", encoding="utf-8") as out:
        bundle = args.out.suffix == ".json"
        if bundle:
            out.write('{"resourceType": "Bundle", "type": "collection", "entry": [\n')
        for resource in resources:
            if bundle:
                out.write(("," if written else "") + json.dumps({"resource": resource}) + "\n")
            else:
                out.write(json.dumps(resource) + "\n")
            written += 1
        if bundle:
            out.write("]}\n")
    print(f"wrote {written:,} resources to {args.out}")
    return EXIT_OK


def cmd_sandbox(_settings: Settings, args: argparse.Namespace) -> int:
    import random

    from shared.fhir.synthetic import SyntheticCounts
    from shared.sandbox.data import SandboxData
    from shared.sandbox.gates import Faults
    from shared.sandbox.notify import WebhookConfig
    from shared.sandbox.server import Sandbox, SandboxConfig
    from shared.webhooks.signatures import standard_webhooks_key

    rate = str(args.rate_limit).removesuffix("/min")
    if not rate.isdigit():
        raise CliError(f"--rate-limit {args.rate_limit!r}: expected requests per minute, e.g. 300/min")
    for name in ("fault_rate", "drop_rate"):
        if not 0 <= getattr(args, name) <= 1:
            raise CliError(f"--{name.replace('_', '-')} must be between 0 and 1")
    webhook = None
    if args.webhook_url:
        if not args.webhook_secret:
            raise CliError("--webhook-url needs --webhook-secret")
        try:
            webhook = WebhookConfig(args.webhook_url, args.webhook_scheme, args.webhook_secret, args.webhook_header)
            if args.webhook_scheme == "standard-webhooks":
                standard_webhooks_key(args.webhook_secret)
        except ValueError as exc:
            raise CliError(f"--webhook-*: {exc}") from None
    anchor = _anchor(args.anchor)
    started = time.monotonic()
    counts = SyntheticCounts(args.practitioners, args.patients, args.appointments, args.invoices, args.referrals)
    data = SandboxData(counts, seed=args.seed, anchor=anchor)
    config = SandboxConfig(
        client_id=args.client_id, client_secret=args.client_secret, token_ttl=args.token_ttl,
        rate_limit=int(rate), expired_style=args.expired_style, webhook=webhook,
        faults=Faults(error_rate=args.fault_rate, drop_rate=args.drop_rate, latency_ms=args.latency_ms,
                      rng=random.Random(args.seed)),
    )
    try:
        sandbox = Sandbox(data, config, port=args.port)
    except OSError as exc:
        raise CliError(f"cannot listen on 127.0.0.1:{args.port} ({exc.strerror}); choose another --port") from None
    total = sum(len(v) for v in data.by_type.values())
    print(f"sandbox: {total:,} resources generated in {time.monotonic() - started:.1f} s; "
          f"FHIR base {sandbox.base_url}, token endpoint {sandbox.base_url}/oauth/token", flush=True)
    try:
        sandbox.serve()
    except KeyboardInterrupt:
        sandbox.stop()
    return EXIT_OK


def _anchor(text: str | None) -> datetime:
    from datetime import date
    from datetime import time as day_time

    from shared.timebounds import RANGE_TEXT, day_in_range

    try:
        day = date.fromisoformat(text) if text else date.today()
    except ValueError:
        raise CliError(f"--anchor {text!r} is not an ISO date (YYYY-MM-DD)") from None
    if not day_in_range(day):
        raise CliError(f"--anchor {text}: must be a date {RANGE_TEXT}")
    return datetime.combine(day, day_time(9, 0), tzinfo=UTC)


def _port_of(url: str) -> int:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


COMMANDS = {"migrate": cmd_migrate, "load": cmd_load, "tenants": cmd_tenants, "generate": cmd_generate,
            "sandbox": cmd_sandbox, "reconcile": cmd_reconcile, "serve": cmd_serve}

if __name__ == "__main__":
    sys.exit(main())
