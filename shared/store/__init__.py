"""The store: tables, engines, the version-guarded bulk upsert, runs/leases/cursors/inbox."""
