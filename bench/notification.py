"""What a many-event notification costs to acknowledge: its queue sends, one by one (the baseline,
as receive did before send_many) and at once (``AzureQueues.send_many``), against Azurite.

    python -m bench.notification [--events 40] [--repeats 30]

The webhook answers only after every message of the delivery is sent, so this is most of a
Backport bundle's acknowledgement; senders give up after a few seconds (the sandbox's after 5).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from devtools.localhost.azurite import start_azurite_queue, stop
from shared.bootstrap import azurite_connection_string
from shared.queues.azure import SEND_CONCURRENCY, AzureQueues
from shared.queues.messages import ChangeMessage, encode


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered) * 1000:7.1f} ms, p95 {p95 * 1000:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=40, help="change messages per notification (default 40)")
    parser.add_argument("--repeats", type=int, default=30, help="notifications timed each way (default 30)")
    args = parser.parse_args()
    texts = [encode(ChangeMessage(tenant="north", type="Appointment", id=f"AP-{n}", action="update", version=str(n)))
             for n in range(args.events)]
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_azurite_queue(Path(tmp) / "azurite.log")
        try:
            queues = AzureQueues.from_connection_string(azurite_connection_string(url))
            queues.send_many("warm-up", texts)
            serial: list[float] = []
            at_once: list[float] = []
            for _ in range(args.repeats):  # interleaved: both see the same machine load
                began = time.perf_counter()
                for text in texts:
                    queues.send("one-by-one", text)
                serial.append(time.perf_counter() - began)
                began = time.perf_counter()
                queues.send_many("at-once", texts)
                at_once.append(time.perf_counter() - began)
            sent = queues.count("one-by-one"), queues.count("at-once")
        finally:
            stop(proc)
    print(f"{args.events}-event notification, {args.repeats} times each way, Azurite on loopback")
    print(f"  one by one (baseline):        {_ms(serial)}")
    print(f"  send_many ({SEND_CONCURRENCY} in flight):     {_ms(at_once)}")
    print(f"  ratio (median, baseline / send_many): {statistics.median(serial) / statistics.median(at_once):.1f}x")
    print(f"  messages on the queues: {sent[0]:,} and {sent[1]:,} (expected {args.events * args.repeats:,} each)")


if __name__ == "__main__":
    main()
