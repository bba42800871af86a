"""The development commands of ``python -m shared.cli``: serve (the local host), generate
(synthetic FHIR data) and sandbox (a Halaxy-like FHIR source). shared.cli hands them here when
devtools/ is present, that is in a checkout of the repository."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.cli import EXIT_OK, CliError
from shared.settings import Settings

REST_APIS = ("hie-facilities", "ppb-premises", "cliniko", "pems")


def add_commands(commands: Any) -> None:
    """The development subcommands, on shared.cli's parser."""
    serve = commands.add_parser("serve", help="run function_app.py locally: HTTP on 127.0.0.1, timers, queues "
                                "(with no tenants: the bundled sandbox as tenant 'demo')")
    serve.add_argument("--port", type=int, default=7071, help="HTTP port on 127.0.0.1 (default 7071; 0 = any free)")
    serve.add_argument("--once", action="store_true",
                       help="demo only: full reconcile, churn with webhooks, drain, full reconcile; "
                            "exit 0 only if the mirror equals the sandbox")

    generate = commands.add_parser("generate", help="write deterministic synthetic FHIR data (NDJSON or a Bundle)")
    generate.add_argument("--out", type=Path, required=True, help="output file: .ndjson or .json (a collection Bundle)")
    generate.add_argument("--seed", type=int, default=1)
    generate.add_argument("--practitioners", type=int, default=5)
    generate.add_argument("--patients", type=int, default=50)
    generate.add_argument("--appointments", type=int, default=200)
    generate.add_argument("--invoices", type=int, default=100)
    generate.add_argument("--referrals", type=int, help="default: one for every other patient")
    generate.add_argument("--anchor", help="ISO date the data is centred on (default: today)")
    sandbox = commands.add_parser("sandbox", help="serve a sandbox source on 127.0.0.1: Halaxy-like FHIR R4, or one "
                                  "of the REST APIs (--api)")
    sandbox.add_argument("--api", choices=("fhir", *REST_APIS), default="fhir",
                         help="which source to play (default fhir: Halaxy)")
    sandbox.add_argument("--records", type=int,
                         help="hie-facilities, ppb-premises, pems: records to start with (default 8000, 10000, 20000)")
    sandbox.add_argument("--organizations", type=int, default=1,
                         help="pems: organizations the records are spread over (org-1, org-2, ...; default 1)")
    sandbox.add_argument("--updated-since", choices=("refused", "ignored", "supported"),
                         help="ppb-premises: how the catalogue treats ?updatedSince= (default refused: 400, as "
                              "today; ignored: the whole catalogue; supported: what changed since)")
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
    sandbox.add_argument("--rate-limit", help="requests per minute per client, e.g. 300/min; 0 = none "
                         "(default: fhir 500/min, cliniko 200/min, the others 600/min)")
    sandbox.add_argument("--fault-rate", type=float, default=0.0, help="share of requests answered 500/502/503")
    sandbox.add_argument("--drop-rate", type=float, default=0.0, help="share of connections reset without answer")
    sandbox.add_argument("--latency-ms", type=int, default=0, help="added to every request")
    sandbox.add_argument("--expired-style", choices=("401", "outcome", "mixed"), default="mixed")
    sandbox.add_argument("--webhook-url", help="where churn sends notifications ({event} is replaced), loopback only")
    sandbox.add_argument("--webhook-scheme", choices=("halaxy", "hmac-sha256", "standard-webhooks"), default="halaxy")
    sandbox.add_argument("--webhook-secret", help="static secret, HMAC key, or whsec_… secret")
    sandbox.add_argument("--webhook-header", default="", help="header for the halaxy secret / the hex HMAC")


def _interrupt(signum: int, _frame: object) -> None:
    from devtools.localhost.serve import Interrupted

    raise Interrupted(signum)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import logging

    from devtools.localhost.serve import serve, stopped

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


def cmd_generate(_settings: Settings, args: argparse.Namespace) -> int:
    from devtools.synthetic import SyntheticCounts, generate

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

    from devtools.sandbox.data import SandboxData
    from devtools.sandbox.notify import WebhookConfig
    from devtools.sandbox.server import Sandbox, SandboxConfig
    from devtools.synthetic import SyntheticCounts
    from shared.webhooks.signatures import standard_webhooks_key

    if args.api != "fhir":
        return _rest_sandbox(args)
    rate, faults = _gates(args, 500)
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
        rate_limit=rate, expired_style=args.expired_style, webhook=webhook, faults=faults,
    )
    sandbox = _listening(lambda: Sandbox(data, config, port=args.port), args.port)
    total = sum(len(v) for v in data.by_type.values())
    print(f"sandbox: {total:,} resources generated in {time.monotonic() - started:.1f} s; "
          f"FHIR base {sandbox.base_url}, token endpoint {sandbox.base_url}/oauth/token", flush=True)
    return _serve(sandbox)


def _gates(args: argparse.Namespace, default_rate: int) -> tuple[int, Any]:
    """--rate-limit (requests a minute) and the injected faults, checked; for either sandbox."""
    import random

    from devtools.sandbox.gates import Faults

    rate = str(args.rate_limit or f"{default_rate}/min").removesuffix("/min")
    if not rate.isdigit():
        raise CliError(f"--rate-limit {args.rate_limit!r}: expected requests per minute, e.g. 300/min")
    for name in ("fault_rate", "drop_rate"):
        if not 0 <= getattr(args, name) <= 1:
            raise CliError(f"--{name.replace('_', '-')} must be between 0 and 1")
    return int(rate), Faults(error_rate=args.fault_rate, drop_rate=args.drop_rate, latency_ms=args.latency_ms,
                             rng=random.Random(args.seed))


def _listening(make: Callable[[], Any], port: int) -> Any:
    try:
        return make()
    except OSError as exc:
        raise CliError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); choose another --port") from None


def _serve(sandbox: Any) -> int:
    try:
        sandbox.serve()
    except KeyboardInterrupt:
        sandbox.stop()
    return EXIT_OK


def _rest_sandbox(args: argparse.Namespace) -> int:

    from devtools.sandbox.notify import require_loopback
    from devtools.sandbox.rest.apis import APIS, build_api
    from devtools.sandbox.rest.server import RestConfig, RestSandbox
    from devtools.synthetic import SyntheticCounts

    rate, faults = _gates(args, APIS[args.api].default_rate_limit)
    if args.records is not None and args.records < 0:
        raise CliError("--records must not be negative")
    if not 1 <= args.organizations <= 100:
        raise CliError("--organizations must be between 1 and 100")
    if args.webhook_url and APIS[args.api].webhook_header is None:
        raise CliError(f"--webhook-url: {args.api} sends no webhooks (HIE and PPB do)")
    if args.webhook_url and not args.webhook_secret:
        raise CliError("--webhook-url needs --webhook-secret (the HMAC key)")
    if args.updated_since and args.api != "ppb-premises":
        raise CliError(f"--updated-since: only ppb-premises has it ({args.api} was given)")
    started = time.monotonic()
    api = build_api(args.api, seed=args.seed, records=args.records, anchor=_anchor(args.anchor),
                    counts=SyntheticCounts(args.practitioners, args.patients, args.appointments, args.invoices),
                    client_id=args.client_id, client_secret=args.client_secret, organizations=args.organizations)
    if args.updated_since:
        api.updated_since = args.updated_since  # type: ignore[attr-defined]  # PpbPremises
    if args.webhook_url:
        try:
            require_loopback(args.webhook_url)
        except ValueError as exc:
            raise CliError(f"--webhook-url: {exc}") from None
    config = RestConfig(rate_limit=rate, token_ttl=args.token_ttl, webhook_url=args.webhook_url,
                        webhook_secret=args.webhook_secret or "", faults=faults)
    sandbox = _listening(lambda: RestSandbox(api, config, port=args.port), args.port)
    total = sum(len(v) for v in api.store.entities.values())
    print(f"sandbox {args.api}: {total:,} records generated in {time.monotonic() - started:.1f} s; "
          f"serving on {sandbox.base_url} (samples/tenants.{args.api}.json reads it on port 7072)", flush=True)
    return _serve(sandbox)


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


COMMANDS = {"serve": cmd_serve, "generate": cmd_generate, "sandbox": cmd_sandbox}
