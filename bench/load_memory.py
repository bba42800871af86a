"""Peak memory and speed of `shared.cli load` on a 10,000- and a 100,000-resource export.

    python -m bench.load_memory [--small N] [--large N] [--format ndjson|bundle|both] [--database-url URL]

Each load runs as its own process (as a user runs it); its peak RSS comes from the kernel's
accounting of that process (os.wait4), not from sampling.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_export(path: Path, total: int, fmt: str) -> None:
    from devtools.synthetic import SyntheticCounts, generate

    # Shaped like a practice's export: mostly appointments, then clients, invoices and referrals.
    counts = SyntheticCounts(practitioners=max(total // 2000, 1), patients=total // 5, appointments=total * 3 // 5,
                             invoices=total // 10 - 2 * max(total // 2000, 1), referrals=total // 10)
    with path.open("w") as out:
        if fmt == "bundle":
            out.write('{"resourceType": "Bundle", "type": "collection", "entry": [\n')
        for n, resource in enumerate(generate(counts, seed=9)):
            if fmt == "bundle":
                out.write(("," if n else "") + json.dumps({"resource": resource}) + "\n")
            else:
                out.write(json.dumps(resource) + "\n")
        if fmt == "bundle":
            out.write("]}\n")


def measured_load(export: Path, database_url: str, tenants: Path) -> tuple[float, float, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "shared.cli", "--database-url", database_url, "--tenants-file", str(tenants)]
    subprocess.run([*base, "migrate"], env=env, check=True, capture_output=True)
    started = time.perf_counter()
    proc = subprocess.Popen([*base, "load", "--tenant", "bench", str(export)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"load failed: {output}")
    return usage.ru_maxrss / 1024, elapsed, output.strip().splitlines()[1].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--format", choices=("ndjson", "bundle", "both"), default="both")
    parser.add_argument("--database-url", help="default: a fresh SQLite file per run")
    args = parser.parse_args()
    formats = ("ndjson", "bundle") if args.format == "both" else (args.format,)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        tenants = tmp / "tenants.json"
        tenants.write_text(json.dumps([{"id": "bench", "name": "Bench", "fhir_base_url": "http://127.0.0.1:9/main",
                                        "client_id": "c", "client_secret": "s"}]))
        for fmt in formats:
            peaks = {}
            for total in (args.small, args.large):
                export = tmp / f"export-{total}.{'json' if fmt == 'bundle' else 'ndjson'}"
                write_export(export, total, fmt)
                url = args.database_url or f"sqlite:///{tmp / f'{fmt}-{total}.db'}"
                peak, elapsed, summary = measured_load(export, url, tenants)
                peaks[total] = peak
                print(f"{fmt:>6} {total:>8,} resources  {export.stat().st_size / 2**20:7.1f} MiB  "
                      f"peak RSS {peak:6.1f} MiB  {elapsed:6.1f} s  {total / elapsed:8,.0f} resources/s  [{summary}]")
            print(f"{fmt:>6} peak memory {args.large:,} vs {args.small:,}: {peaks[args.large] / peaks[args.small]:.2f}x "
                  f"for {args.large / args.small:.0f}x the data")


if __name__ == "__main__":
    main()
