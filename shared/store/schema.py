"""Tables of the database contract (DESIGN.md), defined once for every dialect.

Every mirrored table carries the same bookkeeping columns and is unique on
(tenant_id, source_id); its other columns are the row a FHIR transformer produces.
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Float,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Unicode,
    UnicodeText,
    text,
)

from shared.store.types import UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = String(64)  # FHIR ids are [A-Za-z0-9\-\.]{1,64}
BOOKKEEPING = (
    "tenant_id",
    "source_id",
    "source_version",
    "source_version_seq",
    "source_updated_at",
    "content_hash",
    "deleted_at",
    "last_synced_at",
)


def _mirrored(name: str, *content: Column, indexes: tuple[Index, ...] = (), meta: MetaData = metadata) -> Table:
    # Only the primary key may lead with tenant_id. Secondary indexes lead with the practitioner
    # or client: for a tenant the statistics have not seen yet (a new practice, a first load),
    # PostgreSQL otherwise probes a secondary index that merely starts with tenant_id instead
    # of the key (measured: 585 rows/s instead of 20,000). Equality on both columns uses either
    # order equally well.
    return Table(
        name,
        meta,
        Column("tenant_id", ID, nullable=False),
        Column("source_id", ID, nullable=False),
        Column("source_version", String(64)),
        # meta.versionId as a number when it is one: the tie-break at equal lastUpdated.
        Column("source_version_seq", BigInteger),
        Column("source_updated_at", UTCDateTime(), nullable=False),
        Column("content_hash", String(32), nullable=False),
        Column("deleted_at", UTCDateTime()),
        Column("last_synced_at", UTCDateTime(), nullable=False),
        *content,
        PrimaryKeyConstraint("tenant_id", "source_id"),
        *indexes,
        # Room on each page lets PostgreSQL update a row in place (HOT) when no indexed column
        # changed — the common case of a mirror: a status or a time moves, keys do not.
        postgresql_with={"fillfactor": 85},
    )


# Content columns are nullable: a tombstone for a never-seen id carries bookkeeping only.
practitioners = _mirrored(
    "practitioners",
    Column("display_name", Unicode(200)),
    Column("given_name", Unicode(100)),
    Column("family_name", Unicode(100)),
    Column("email", Unicode(200)),
    Column("phone", Unicode(50)),
    Column("active", Boolean),
)

practitioner_roles = _mirrored(
    "practitioner_roles",
    Column("practitioner_id", ID),
    Column("organization_id", ID),
    Column("role_code", Unicode(100)),
    Column("role_display", Unicode(200)),
    Column("active", Boolean),
    indexes=(Index(None, "practitioner_id", "tenant_id"),),
)

clients = _mirrored(
    "clients",
    Column("practitioner_id", ID),
    Column("given_name", Unicode(100)),
    Column("family_name", Unicode(100)),
    Column("initials", Unicode(8)),
    Column("birth_date", Date),
    Column("gender", String(16)),
    Column("email", Unicode(200)),
    Column("phone", Unicode(50)),
    Column("active", Boolean),
    indexes=(Index(None, "practitioner_id", "tenant_id"),),
)

sessions = _mirrored(
    "sessions",
    Column("practitioner_id", ID),
    Column("practitioner_role_id", ID),
    Column("client_id", ID),
    # Group sessions: every patient id, space-separated; client_id is the first of them.
    Column("client_ids", Unicode(1000)),
    Column("start_at", UTCDateTime()),
    Column("end_at", UTCDateTime()),
    Column("status", String(16)),
    Column("source_status", String(32)),
    Column("service", Unicode(200)),
    indexes=(
        # The dashboard's day and a client's history. No index on practitioner_role_id: the
        # writer resolves a role to its practitioner (shared/store/mirror.py), and every
        # secondary index costs ~15% of bulk insert speed.
        Index(None, "practitioner_id", "tenant_id", "start_at"),
        Index(None, "client_id", "tenant_id", "start_at"),
    ),
)

invoices = _mirrored(
    "invoices",
    Column("practitioner_id", ID),
    Column("practitioner_role_id", ID),
    Column("client_id", ID),
    Column("status", String(16)),
    Column("source_status", String(32)),
    Column("issued_at", UTCDateTime()),
    Column("total_net", Numeric(12, 2)),
    Column("total_gross", Numeric(12, 2)),
    Column("total_paid", Numeric(12, 2)),
    Column("total_balance", Numeric(12, 2)),
    Column("currency", String(3)),
    indexes=(Index(None, "practitioner_id", "tenant_id", "issued_at"),),
)

# Halaxy's referrals (a GP's care plan, say): a validity period, the practitioner it is for and
# how many sessions it funds. The dashboard counts a client's sessions against them.
referrals = _mirrored(
    "referrals",
    Column("client_id", ID),
    Column("practitioner_id", ID),
    Column("status", String(16)),
    Column("name", Unicode(200)),
    Column("starts_on", Date),
    Column("ends_on", Date),
    Column("session_limit", Integer),
    Column("prior_sessions", Integer),
    Column("preferred", Boolean),
    indexes=(Index(None, "client_id", "tenant_id"),),
)

MIRRORED_TABLES = {t.name: t for t in (practitioners, practitioner_roles, clients, sessions, invoices, referrals)}

tenants = Table(
    "tenants",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", Unicode(200), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

ACTIVE_RUN_STATUSES = ("queued", "running")
sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", ID, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("mode", String(32)),  # a tenant's sync mode (its named subset of entities); NULL: all of them
    Column("status", String(16), nullable=False),
    Column("step", Unicode(200)),
    Column("records_total", Integer),
    Column("processed", Integer, nullable=False, server_default=text("0")),
    Column("inserted", Integer, nullable=False, server_default=text("0")),
    Column("updated", Integer, nullable=False, server_default=text("0")),
    Column("unchanged", Integer, nullable=False, server_default=text("0")),
    Column("stale", Integer, nullable=False, server_default=text("0")),
    Column("deleted", Integer, nullable=False, server_default=text("0")),
    Column("errored", Integer, nullable=False, server_default=text("0")),
    Column("checkpoint", UnicodeText),
    Column("fencing_token", BigInteger, nullable=False, server_default=text("0")),
    Column("error", UnicodeText),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("heartbeat_at", UTCDateTime()),
    Column("finished_at", UTCDateTime()),
    Index(None, "tenant_id", "started_at"),
    # One active run per (tenant, kind), enforced by the database: a filtered unique index.
    Index(
        "uq_sync_runs_active",
        "tenant_id",
        "kind",
        unique=True,
        sqlite_where=text("status IN ('queued', 'running')"),
        postgresql_where=text("status IN ('queued', 'running')"),
        mssql_where=text("status IN ('queued', 'running')"),
    ),
)

sync_cursors = Table(
    "sync_cursors",
    metadata,
    Column("tenant_id", ID, nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("watermark", UTCDateTime()),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant_id", "resource_type"),
)

inbox = Table(
    "inbox",
    metadata,
    Column("tenant_id", ID, nullable=False),
    Column("idempotency_key", String(200), nullable=False),
    Column("event_type", String(64)),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant_id", "idempotency_key"),
    Index(None, "expires_at"),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("holder", String(200)),
    Column("fencing_token", BigInteger, nullable=False),
    Column("expires_at", UTCDateTime()),
)

# Circuit-breaker state per (tenant, source host), shared by every worker instance.
source_health = Table(
    "source_health",
    metadata,
    Column("breaker_key", String(300), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("failures", Integer, nullable=False),
    # Monotonic-free times: seconds since the epoch, as floats (every instance's wall clock).
    Column("opened_at", Float, nullable=False),
    Column("probe_until", Float, nullable=False),
    Column("not_before", Float, nullable=False),  # a source's Retry-After, for every instance
    Column("updated_at", UTCDateTime(), nullable=False),
)

# Ids a full reconcile saw, per run: delete detection compares the mirror against them (unchanged
# rows are not rewritten, so they carry no mark of their own). Emptied when the run ends.
sync_seen = Table(
    "sync_seen",
    metadata,
    Column("run_id", String(36), nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("source_id", ID, nullable=False),
    Index(None, "run_id", "resource_type", "source_id"),
)

# Counters per tenant (webhooks received, rejected by reason, applied, lag buckets…), added to
# in batches by every instance (shared/metrics.py). Names are fixed strings, never input.
tenant_metrics = Table(
    "tenant_metrics",
    metadata,
    Column("tenant_id", ID, nullable=False),
    Column("name", String(80), nullable=False),
    Column("value", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant_id", "name"),
)

# FHIR Subscriptions Backport bookkeeping: the event numbers each subscription delivered, so
# gaps (events the source numbered but never delivered) are found and reconciled.
webhook_subscriptions = Table(
    "webhook_subscriptions",
    metadata,
    Column("tenant_id", ID, nullable=False),
    Column("subscription", String(200), nullable=False),
    Column("resource_types", String(200), nullable=False),  # space-separated, as seen in its events
    Column("highest_event", BigInteger, nullable=False),  # highest number seen or announced
    Column("checked_through", BigInteger, nullable=False),  # every number up to here is settled
    Column("gap_seen_at", UTCDateTime()),  # when missing numbers were first noticed
    Column("gap_through", BigInteger),  # the highest number known then: the gap's extent
    Column("gaps", BigInteger, nullable=False),  # events found missing, in total
    Column("last_event_at", UTCDateTime(), nullable=False),  # first delivery, heartbeats, new types: not every one
    PrimaryKeyConstraint("tenant_id", "subscription"),
)

webhook_events = Table(
    "webhook_events",
    metadata,
    Column("tenant_id", ID, nullable=False),
    Column("subscription", String(200), nullable=False),
    Column("event_number", BigInteger, nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant_id", "subscription", "event_number"),
)

# Changes a reconcile found that the webhooks should have brought (a webhook-announced type,
# changed since the last sync, older than the grace period): the subscription is probably broken.
webhook_silence = Table(
    "webhook_silence",
    metadata,
    Column("tenant_id", ID, nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("changes", BigInteger, nullable=False),  # in total
    Column("first_seen_at", UTCDateTime(), nullable=False),
    Column("last_seen_at", UTCDateTime(), nullable=False),
    Column("last_run_id", String(36), nullable=False),
    Column("last_change_at", UTCDateTime(), nullable=False),  # the newest missed change's lastUpdated
    PrimaryKeyConstraint("tenant_id", "resource_type"),
)


def mirrored_table(name: str, *content: Column, meta: MetaData) -> Table:
    """A mirrored table of a REST spec's own: the same bookkeeping as the built-in ones."""
    return _mirrored(name, *content, meta=meta)


def content_columns(table_name: str) -> frozenset[str]:
    """A built-in mirrored table's own columns (what a mapping may fill); empty if no such table."""
    table = MIRRORED_TABLES.get(table_name)
    return frozenset(c.name for c in table.columns if c.name not in BOOKKEEPING) if table is not None else frozenset()
