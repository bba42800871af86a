"""The fault matrix: real work flows, one fault is injected, then what the source acknowledged is
compared with what the mirror holds.

    python -m bench.faults [--runs 20] [--seed 1] [--events 2000] [--fault NAME …] [--database sqlite|postgresql]
    python -m bench.faults --list

Each run starts, on loopback: Azurite (kept on disk in a temporary folder, so it can be stopped
and started again), a fresh database with triggers that log any write moving a row to an older
version, three sandbox sources (one tenant each, the same ids in all three, one webhook scheme
each: halaxy, hmac-sha256, standard-webhooks) and the function app on the local host in a child
process (restarted when a failpoint crashes it). Every tenant is fully loaded, then the sandboxes
change ``--events`` records in rounds while their webhooks flow and the fault acts; then
everything drains, and the run checks:

- **lost** — a delivery the app acknowledged (2xx) whose change is not in the mirror after the
  drain (before any repair), plus, after one full reconcile per tenant, every (type, id,
  version) live at a source and not in that tenant's mirror;
- **unexpected** — rows in a mirror its source does not have (or on another version), and rows
  under a tenant id that is not one of the run's;
- **regressions** — updates that moved a row to an older (lastUpdated, versionId), from the
  triggers' log: every write is checked, not only the final state;
- **poison** — messages in the poison queues beyond what the fault put there on purpose;
- **failed checks** — a fault's own expectations: a replayed or oversized delivery refused, the
  breaker opening in an outage with the requests reaching the dead source bounded.

A run passes when all five are zero. The table printed at the end has one row per fault.
``tests/e2e/test_faults.py`` runs a fast subset (a few faults, one short run each) in ``make test``.
"""
