"""The operators' status page: every tenant at a glance, recent runs and the poison count, as one
self-contained HTML document (no script, no external asset) that reads on a laptop and a phone.
Every value from the database or the configuration is escaped."""
from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

from sqlalchemy import Connection, select

from shared.metrics import RATE_MINUTES, webhook_rate
from shared.queues.messages import CHANGES_QUEUE
from shared.queues.port import QueuePort, poison_name
from shared.reads.health import TenantHealth, tenant_health
from shared.settings import TenantConfig
from shared.store.schema import sync_runs, tenant_metrics, webhook_silence

LABELS = {"on_time": "On time", "delayed": "Delayed", "error": "Error", "disabled": "Disabled"}
STYLE = """
:root{--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--off:#6e7781;--line:#d0d7de;font-family:system-ui,sans-serif}
body{margin:0;padding:1rem;color:#1f2328;background:#f6f8fa}
h1{font-size:1.4rem;margin:0 0 .25rem} h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
.meta{color:#57606a;font-size:.9rem;margin:0 0 1rem}
.tenants{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,18rem),1fr));gap:.75rem}
.card{background:#fff;border:1px solid var(--line);border-left:.4rem solid var(--off);border-radius:6px;padding:.75rem}
.card.on_time{border-left-color:var(--ok)} .card.delayed{border-left-color:var(--warn)}
.card.error{border-left-color:var(--bad)}
.card h3{font-size:1rem;margin:0 0 .4rem;overflow-wrap:anywhere}
.badge{display:inline-block;font-size:.8rem;font-weight:600;padding:.1rem .45rem;border-radius:1rem;color:#fff;
background:var(--off)} .on_time .badge{background:var(--ok)} .delayed .badge{background:var(--warn)}
.error .badge{background:var(--bad)}
dl{display:grid;grid-template-columns:auto 1fr;gap:.15rem .6rem;margin:.5rem 0 0;font-size:.9rem}
dt{color:#57606a} dd{margin:0;overflow-wrap:anywhere}
.problem{color:var(--bad);font-size:.85rem;margin:.4rem 0 0;overflow-wrap:anywhere}
.scroll{overflow-x:auto;background:#fff;border:1px solid var(--line);border-radius:6px}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid var(--line);white-space:nowrap}
.poison{font-weight:600} .poison.some{color:var(--bad)}
"""


def ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "never"
    seconds = max(0, int((now - then).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _card(tenant: TenantConfig, health: TenantHealth, last_run: Any, webhooks: tuple[int, datetime | None, float],
          silent: int, now: datetime) -> str:
    received, last_webhook, rate = webhooks
    run = (f"{escape(last_run.kind)} · {escape(last_run.status)} · {ago(last_run.started_at, now)}"
           if last_run else "none yet")
    problems = []
    if last_run is not None and last_run.status in ("failed", "failed_stale") and last_run.error:
        problems.append(f"Last run: {escape(last_run.error[:200])}")
    if silent:
        problems.append(f"Silent webhooks: {silent} change(s) no webhook announced")
    return (
        f'<article class="card {health.status}" data-tenant="{escape(tenant.id)}">'
        f'<h3>{escape(tenant.name)} <small>({escape(tenant.id)})</small></h3>'
        f'<span class="badge">{LABELS[health.status]}</span>'
        f"<dl><dt>Freshness</dt><dd>{ago(health.last_success_at, now)}</dd>"
        f"<dt>Last run</dt><dd>{run}</dd>"
        f"<dt>Webhooks</dt><dd>{rate:,.1f}/min (last {RATE_MINUTES} min) · last {ago(last_webhook, now)}"
        f" · {received:,} in all</dd>"
        f"<dt>Failures</dt><dd>{health.failure_streak} in a row</dd></dl>"
        + "".join(f'<p class="problem">{p}</p>' for p in problems)
        + "</article>")


def status_page(conn: Connection, tenants: list[TenantConfig], queues: QueuePort, now: datetime) -> str:
    r, m, s = sync_runs.c, tenant_metrics.c, webhook_silence.c
    cards = []
    for tenant in tenants:
        health = tenant_health(conn, tenant, now)
        last_run = conn.execute(select(r.kind, r.status, r.started_at, r.error).where(r.tenant_id == tenant.id)
                                .order_by(r.started_at.desc()).limit(1)).first()
        webhooks = conn.execute(select(m.value, m.updated_at).where(
            m.tenant_id == tenant.id, m.name == "webhook.received")).first()
        silent = conn.execute(select(s.changes).where(s.tenant_id == tenant.id)).scalars().all()
        rate = webhook_rate(conn, tenant.id, now)
        cards.append(_card(tenant, health, last_run, (*webhooks, rate) if webhooks else (0, None, rate),
                           sum(silent), now))
    recent = conn.execute(select(r.tenant_id, r.kind, r.status, r.processed, r.started_at, r.finished_at)
                          .order_by(r.started_at.desc()).limit(15)).all()
    rows = "".join(
        f"<tr><td>{escape(x.tenant_id)}</td><td>{escape(x.kind)}</td><td>{escape(x.status)}</td>"
        f"<td>{x.processed:,}</td><td>{ago(x.started_at, now)}</td>"
        f"<td>{f'{(x.finished_at - x.started_at).total_seconds():.1f} s' if x.finished_at else '…'}</td></tr>"
        for x in recent) or '<tr><td colspan="6">No runs yet.</td></tr>'
    try:
        poison: int | None = queues.count(poison_name(CHANGES_QUEUE))
    except Exception:  # noqa: BLE001 — the page must render when the queue service does not answer
        poison = None
    poison_text = "unknown (queue unreachable)" if poison is None else f"{poison:,}"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>Sync status</title><style>{STYLE}</style></head><body>"
        f"<h1>Sync status</h1><p class=\"meta\">{len(tenants)} tenant(s) · checked {escape(now.isoformat())}</p>"
        f'<section class="tenants">{"".join(cards) or "<p>No tenants configured.</p>"}</section>'
        f'<h2>Poison messages</h2><p class="poison{" some" if poison else ""}" id="poison">{poison_text}</p>'
        '<h2>Recent runs</h2><div class="scroll"><table><thead><tr><th>Tenant</th><th>Kind</th><th>Status</th>'
        f"<th>Records</th><th>Started</th><th>Took</th></tr></thead><tbody>{rows}</tbody></table></div>"
        "</body></html>")
