"""`python -m bench.rest` as docs/benchmarks.md tells a user to run it (small, one round, SQLite):
both sandboxes start, both full syncs mirror every record, and the summary compares the rates."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_rest_bench_runs_both_syncs_and_compares_them() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.rest", "--records", "1500", "--api", "pems", "ppb-premises",
                           "--rounds", "1", "--only", "sqlite"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = dict(re.findall(r"^round 1 sqlite +(\S+) +full: ([\d,]+) rows", done.stdout, re.MULTILINE))
    # PEMS and PPB mirror exactly their 1,500 records; the FHIR sandbox's total for 1,500 is its own mix
    assert rows.keys() == {"fhir", "pems", "ppb-premises"} and rows["pems"] == rows["ppb-premises"] == "1,500", done.stdout
    assert int(rows["fhir"].replace(",", "")) > 1000
    summary = [line for line in done.stdout.splitlines() if "REST ÷ FHIR per round" in line]
    assert [line.split()[1] for line in summary] == ["pems", "ppb-premises"], done.stdout
