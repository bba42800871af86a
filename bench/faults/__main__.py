"""``python -m bench.faults``: the matrix (bench.faults.cli)."""
import sys

from bench.faults.cli import main

sys.exit(main())
