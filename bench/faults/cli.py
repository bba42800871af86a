"""The command: run the matrix over faults and seeds, print each run and a table per fault."""
from __future__ import annotations

import argparse
import sys
import time

from bench.common import DEFAULT_POSTGRES_URL
from bench.faults.catalogue import FAULTS
from bench.faults.host import serve_host
from bench.faults.parts import Fault, Outcome
from bench.faults.run import run_case


def matrix_run(fault: Fault, seed: int, events: int, database: str, postgres_url: str) -> Outcome:
    """One run of the matrix; a run the harness could not finish is a failed run (its error is a
    failed check), and the matrix goes on with the next seed."""
    began = time.monotonic()
    try:
        return run_case(fault, seed, events, database, postgres_url, say=lambda m: print(m, flush=True))
    except Exception as exc:
        print(f"  {fault.name} seed {seed}: the run did not finish: {exc}", flush=True)
        return Outcome(fault.name, seed, events, 0, 0, 0, 0, time.monotonic() - began,
                       violations=[f"the run did not finish: {exc}"])


def table(outcomes: list[Outcome]) -> str:
    lines = [("| fault | runs | events | lost | unexpected | regressions | poison | failed checks | crashes | "
             "seconds |"), "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in dict.fromkeys(o.fault for o in outcomes):
        mine = [o for o in outcomes if o.fault == name]
        lines.append(f"| {name} | {len(mine)} | {sum(o.events for o in mine):,} | {sum(o.lost for o in mine)} | "
                     f"{sum(o.unexpected for o in mine)} | {sum(o.regressions for o in mine)} | "
                     f"{sum(o.poison for o in mine)} | {sum(len(o.violations) for o in mine)} | "
                     f"{sum(o.crashes for o in mine)} | "
                     f"{sum(o.seconds for o in mine):,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    host = sub.add_parser("host", help=argparse.SUPPRESS)
    host.add_argument("--port", type=int, required=True)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1, help="the first run's seed; run n uses seed + n")
    parser.add_argument("--events", type=int, default=2000, help="source changes per run")
    parser.add_argument("--fault", nargs="+", choices=sorted(FAULTS), help="default: every fault")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--list", action="store_true", help="list the faults and exit")
    args = parser.parse_args(argv)
    if args.command == "host":
        serve_host(args.port)
        return 0
    if args.list:
        for fault in FAULTS.values():
            print(f"{fault.name:24} {fault.about}{' (with the two REST tenants)' if fault.rest else ''}")
        return 0
    faults = [FAULTS[name] for name in (args.fault or FAULTS)]
    outcomes: list[Outcome] = []
    began = time.monotonic()
    for fault in faults:
        if args.database not in fault.databases:
            print(f"{fault.name}: needs {' or '.join(fault.databases)}; skipped on {args.database}")
            continue
        print(f"{fault.name}: {fault.about} ({args.runs} runs × {args.events:,} events, {args.database})", flush=True)
        for n in range(args.runs):
            outcomes.append(matrix_run(fault, args.seed + n, args.events, args.database, args.postgres_url))
    print()
    print(table(outcomes))
    failed = [o for o in outcomes if not o.passed]
    print(f"\n{len(outcomes) - len(failed)} of {len(outcomes)} runs passed in {time.monotonic() - began:,.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
