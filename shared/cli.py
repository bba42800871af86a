"""Command line: ``python -m shared.cli [--database-url URL] [--tenants-file F] COMMAND …``.

Exit codes: 0 done; 1 done, but some resources could not be mapped (listed); 2 nothing or only
part was done because of bad input or configuration (the message says what to fix); 130 / 143
``serve --once`` stopped by Ctrl-C / SIGTERM before its cycle finished.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from shared.settings import Settings, SettingsError, TenantConfig, load_settings

EXIT_OK, EXIT_PARTIAL, EXIT_FAILED = 0, 1, 2


class CliError(Exception):
    """A failure the user can fix; the message says what and how."""


# Commands of the development tooling (devtools/, never deployed): the local host, the sandbox
# source and synthetic data. `python -m shared.cli` stays the one command for all of them.
DEV_COMMANDS = ("serve", "generate", "sandbox")


def dev_tools() -> Any:
    """``devtools.cli`` in a checkout of the repository; None in the deployed package, which does
    not hold devtools/ (an optional part, imported when asked for, not to dodge a cycle)."""
    try:
        import devtools.cli
    except ModuleNotFoundError as exc:
        if exc.name != "devtools":
            raise
        return None
    return devtools.cli


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
    reconcile.add_argument("--page-size", type=int, default=None,
                           help="records per page (default: the tenant's page_size, else 100 for FHIR or the "
                                "spec's default; FHIR at most 1000, REST at most the spec's max)")
    reconcile.add_argument("--mode", help="one of the tenant's sync modes (its entities only; with --kind incremental)")

    commands.add_parser("tenants", help="validate the tenants configuration and list tenants (no secrets)")
    tools = dev_tools()
    if tools is not None:
        tools.add_commands(commands)
    else:  # the deployed package: say where they run instead of "invalid choice"
        for name in DEV_COMMANDS:
            commands.add_parser(name, help="development only: run it from a checkout of the repository",
                                add_help=False).add_argument("rest", nargs=argparse.REMAINDER)

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
        return command(args.command)(settings, args)
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


def command(name: str) -> Any:
    if name not in DEV_COMMANDS:
        return COMMANDS[name]
    tools = dev_tools()
    if tools is None:
        raise CliError(f"`{name}` is a development command: run it from a checkout of the repository "
                       "(devtools/ is not part of the deployed package)")
    return tools.COMMANDS[name]


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

    for line in migrate(settings):
        print(line)
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
    from shared.store.breaker import DatabaseBreakerStore
    from shared.store.declared import declare
    from shared.store.engine import create_store_engine, write_transaction
    from shared.store.runs import RunActive, load_position, reap_stale, start_run
    from shared.store.tenants import sync_tenants
    from shared.sync.reconcile import run_reconcile

    tenant = _find_tenant(settings, args.tenant)
    mode = tenant.mode(args.mode) if args.mode else None
    if args.mode and mode is None:
        raise CliError(f"--mode {args.mode!r}: tenant {tenant.id} has no such sync mode "
                       f"({', '.join(m.name for m in tenant.modes) or 'it has none'})")
    if mode is not None and args.kind != "incremental":
        raise CliError(f"--mode {mode.name}: a sync mode is an incremental run (--kind incremental)")
    largest = 1000 if tenant.is_fhir else tenant.rest_spec().page_size.max
    if args.page_size is not None and not 1 <= args.page_size <= largest:
        raise CliError(f"--page-size must be between 1 and {largest:,} for tenant {tenant.id}")
    if not tenant.is_fhir:
        declare([tenant.rest_spec()])
    engine = create_store_engine(settings)
    progress = CountProgress(f"reconcile {tenant.id} {args.kind}")
    try:
        with write_transaction(engine) as conn:
            sync_tenants(conn, [tenant])
            reap_stale(conn, older_than=timedelta(minutes=15))
            try:
                lease = start_run(conn, tenant.id, args.kind, mode=args.mode)
            except RunActive as exc:
                raise CliError(f"{exc}: wait for it to finish, or let the reaper fail it after 15 minutes "
                               "without a heartbeat") from None

        async def run() -> None:
            async with httpx.AsyncClient(timeout=httpx.Timeout(settings.source_timeout)) as http:
                client = SourceRegistry(http, DatabaseBreakerStore(engine),
                                        **source_options(settings)).source(tenant)
                await run_reconcile(engine, client, tenant, lease, page_size=args.page_size,
                                    only=mode.entities if mode else None,
                                    on_progress=lambda p: progress.update(p.done, p.total, p.step))

        try:
            asyncio.run(run())
        except SourceError as exc:
            url, held = tenant.source_url, getattr(exc, "retry_at", None)
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


def cmd_tenants(settings: Settings, _args: argparse.Namespace) -> int:
    tenants = settings.load_tenants()
    for t in tenants:
        print(f"{t.id}\t{t.name}\t{t.timezone}\t{t.webhook_scheme}\t{len(t.webhook_secrets)} webhook secret(s)\t"
              f"{'enabled' if t.enabled else 'disabled'}\t{t.source}\t{t.source_url}")
    print(f"{len(tenants)} tenant(s) valid", file=sys.stderr)
    return EXIT_OK


def _port_of(url: str) -> int:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


COMMANDS = {"migrate": cmd_migrate, "load": cmd_load, "tenants": cmd_tenants, "reconcile": cmd_reconcile}

if __name__ == "__main__":
    # The imported module's main, not this __main__ copy's: devtools' commands raise
    # shared.cli.CliError, which only that module's main catches.
    from shared.cli import main as _main

    sys.exit(_main())
