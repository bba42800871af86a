"""Start Azurite's queue service for tests and benchmarks: loopback, in memory, no telemetry.

Azurite comes from npm (`make test` installs it under .tools/); nothing here downloads it.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class AzuriteUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_azurite_queue(log: Path, *, timeout: float = 30, port: int | None = None,
                        location: Path | None = None,
                        oauth_tls: tuple[Path, Path] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """(the process, its queue endpoint URL); raises AzuriteUnavailable saying what to do.

    In memory unless ``location`` is given: a folder kept on disk, so that Azurite stopped and
    started again on the same ``port`` still has its queues (the fault harness does that).
    ``oauth_tls`` (certificate, key): HTTPS with Azurite's basic OAuth — bearer tokens checked for
    issuer, audience and expiry, as Azure Storage does with an identity (signatures are not)."""
    binary = ROOT / ".tools" / "node_modules" / ".bin" / "azurite-queue"
    if not binary.exists():
        on_path = shutil.which("azurite-queue")
        if on_path is None:
            raise AzuriteUnavailable("Azurite is not installed: run `make test` (it installs azurite from npm)")
        binary = Path(on_path)
    port = port or free_port()
    persistence = ["--location", str(location)] if location is not None else ["--inMemoryPersistence"]
    oauth = ["--oauth", "basic", "--cert", str(oauth_tls[0]), "--key", str(oauth_tls[1])] if oauth_tls else []
    proc = subprocess.Popen(
        [str(binary), "--queueHost", "127.0.0.1", "--queuePort", str(port), *persistence, *oauth,
         "--disableTelemetry", "--skipApiVersionCheck", "--loose", "--debug", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    scheme = "https" if oauth_tls else "http"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"{scheme}://127.0.0.1:{port}/devstoreaccount1"
        except OSError:
            if proc.poll() is not None:
                raise AzuriteUnavailable(f"Azurite exited early (code {proc.returncode}); see {log}") from None
            time.sleep(0.1)
    proc.kill()
    raise AzuriteUnavailable(f"Azurite did not start within {timeout:.0f} s; see {log}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
