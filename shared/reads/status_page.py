"""The operators' status page: every tenant at a glance with 24-hour charts, recent runs and the
poison count, as one self-contained HTML document (no external asset; a few lines of script
refresh it in place every 30 s) that reads on a laptop and on a 390 px phone.
Every value from the database or the configuration is escaped."""
from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from shared.queues.messages import CHANGES_QUEUE
from shared.queues.port import QueuePort, poison_name
from shared.reads.charts import Span, bar_chart, dot_chart, lag_series, line_chart
from shared.reads.health import FAILED, FRESHNESS_KINDS, TenantHealth, tenant_health
from shared.settings import TenantConfig
from shared.store.metrics import RATE_MINUTES, webhook_hours, webhook_rate
from shared.store.status import (
    counter,
    finished_runs_since,
    latest_run,
    recent_runs,
    silence_rows,
    successes_since,
)

REFRESH_SECONDS = 30
RECENT_RUNS = 15
CHART_RUNS = 500  # dots on a tenant's duration chart at most
# A tenant's state on the page: its health, and amber when on time but its last run failed.
LABELS = {"on_time": "On time", "warn": "On time · last run failed", "delayed": "Delayed", "error": "Error",
          "disabled": "Disabled"}
STYLE = """
:root{--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--off:#6e7781;--run:#0969da;--line:#d0d7de;
font-family:system-ui,sans-serif}
body{margin:0;padding:1rem;color:#1f2328;background:#f6f8fa}
h1{font-size:1.4rem;margin:0 0 .25rem} h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
.meta{color:#57606a;font-size:.9rem;margin:0 0 1rem}
.tenants{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,22rem),1fr));gap:.75rem}
.card{background:#fff;border:1px solid var(--line);border-left:.4rem solid var(--off);border-radius:6px;
padding:.75rem;min-width:0}
.card.on_time{border-left-color:var(--ok)} .card.warn,.card.delayed{border-left-color:var(--warn)}
.card.error{border-left-color:var(--bad)}
.card h3{font-size:1rem;margin:0 0 .4rem;overflow-wrap:anywhere}
.badge,.pill{display:inline-block;font-size:.8rem;font-weight:600;padding:.1rem .45rem;border-radius:1rem;
color:#fff;background:var(--off)}
.on_time .badge,.pill.completed{background:var(--ok)} .warn .badge,.delayed .badge{background:var(--warn)}
.error .badge,.pill.failed,.pill.failed_stale{background:var(--bad)} .pill.running,.pill.queued{background:var(--run)}
.pill.cancelled{background:var(--off)}
dl{display:grid;grid-template-columns:auto 1fr;gap:.15rem .6rem;margin:.5rem 0 0;font-size:.9rem}
dt{color:#57606a} dd{margin:0;overflow-wrap:anywhere}
time{text-decoration:underline dotted #8c959f;text-underline-offset:2px}
.problem{color:var(--bad);font-size:.85rem;margin:.4rem 0 0;overflow-wrap:anywhere}
.charts{display:grid;gap:.35rem;margin-top:.6rem}
svg.chart{width:100%;height:auto;display:block;background:#fbfcfd;border:1px solid #eaeef2;border-radius:4px}
svg .chart-title{font-size:10px;font-weight:600;fill:#1f2328} svg .axis-label,svg .tick{font-size:9px;fill:#57606a}
svg .axis{stroke:#8c959f;stroke-width:.6} svg .empty{font-size:8px;fill:#8c959f}
svg.line .series{fill:none;stroke:var(--run);stroke-width:1.2} svg.bars .series{fill:#54aeff}
svg .dot{fill:var(--off)} svg .dot.completed{fill:var(--ok)} svg .dot.failed,svg .dot.failed_stale{fill:var(--bad)}
svg .dot.running{fill:var(--run)}
.runs{background:#fff;border:1px solid var(--line);border-radius:6px}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid var(--line);white-space:nowrap}
td.num{text-align:right} code{font-size:.85rem}
.poison{font-weight:600} .poison.some{color:var(--bad)}
@media (max-width:40rem){
 body{padding:.6rem}
 .runs table,.runs tbody,.runs td{display:block;width:auto} .runs thead{display:none}
 .runs tr{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));border-bottom:1px solid var(--line);
  padding:.35rem .2rem}
 .runs td{border:0;padding:.1rem .4rem;white-space:normal;text-align:left}
 .runs td::before{content:attr(data-label) ": ";color:#57606a}
}
"""
SCRIPT = """
(function(){
  async function refreshStatus(){
    try{
      const answer=await fetch(location.href,{cache:"no-store"});
      if(!answer.ok)return false;
      const next=new DOMParser().parseFromString(await answer.text(),"text/html").querySelector("main");
      if(!next)return false;
      document.querySelector("main").replaceWith(next);  // the document stays: so does the scroll position
      document.body.dataset.refreshed=String(Date.now());
      return true;
    }catch(e){return false;}
  }
  window.refreshStatus=refreshStatus;
  setInterval(refreshStatus,Number(document.body.dataset.refreshSeconds)*1000);
})();
"""


def ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "never"
    seconds = max(0, int((now - then).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def when(then: datetime | None, now: datetime, zone: ZoneInfo) -> str:
    """"3 min ago", with the exact time in the tenant's zone on hover."""
    if then is None:
        return "never"
    exact = then.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")
    return f'<time datetime="{then.isoformat()}" title="{escape(exact)}">{ago(then, now)}</time>'


def took(started: datetime, finished: datetime | None) -> str:
    return f"{(finished - started).total_seconds():,.1f} s" if finished else "…"


def page_state(health: TenantHealth, last_run: Any) -> str:
    if health.status == "on_time" and last_run is not None and last_run.status in FAILED:
        return "warn"
    return health.status


def _history(conn: Connection, tenant_id: str, span: Span) -> tuple[list[datetime], list[Any]]:
    """The successful syncs the freshness chart needs (the latest before the span too), and the
    runs that started within it."""
    before, successes = successes_since(conn, tenant_id, FRESHNESS_KINDS, span.start)
    runs = finished_runs_since(conn, tenant_id, span.start, CHART_RUNS)
    return [*([before] if before else []), *successes], runs


def _charts(conn: Connection, tenant: TenantConfig, now: datetime) -> str:
    span = Span(now)
    successes, runs = _history(conn, tenant.id, span)
    lag = lag_series(successes, span)
    hours = webhook_hours(conn, tenant.id, now)
    durations = [(x.started_at, (x.finished_at - x.started_at).total_seconds(), x.status) for x in runs]
    return ('<div class="charts">'
            + line_chart("Freshness lag, 24 h", "min", lag, span)
            + bar_chart("Webhooks per hour, 24 h", "/h", [(at, float(n)) for at, n in hours], span)
            + dot_chart("Run durations, 24 h", "s", durations, span)
            + "</div>")


def _card(conn: Connection, tenant: TenantConfig, now: datetime) -> str:
    health = tenant_health(conn, tenant, now)
    last_run = latest_run(conn, tenant.id)
    received, last_webhook = counter(conn, tenant.id, "webhook.received")
    silent = sum(row.changes for row in silence_rows(conn, tenant.id))
    rate = webhook_rate(conn, tenant.id, now)
    zone, state = tenant.zone, page_state(health, last_run)
    run = (f'{escape(last_run.kind)} · <span class="pill {escape(last_run.status)}">{escape(last_run.status)}</span>'
           f" · {when(last_run.started_at, now, zone)}" if last_run else "none yet")
    problems = []
    if last_run is not None and last_run.status in FAILED and last_run.error:
        problems.append(f"Last run failed: {escape(last_run.error[:200])}")
    if silent:
        problems.append(f"Silent webhooks: {silent:,} change(s) no webhook announced")
    return (
        f'<article class="card {state}" data-tenant="{escape(tenant.id)}">'
        f'<h3>{escape(tenant.name)} <small>({escape(tenant.id)} · {escape(tenant.timezone)})</small></h3>'
        f'<span class="badge">{LABELS[state]}</span>'
        f"<dl><dt>Freshness</dt><dd>{when(health.last_success_at, now, zone)} · {escape(health.reason)}</dd>"
        f"<dt>Last run</dt><dd>{run}</dd>"
        f"<dt>Webhooks</dt><dd>{rate:,.1f}/min (last {RATE_MINUTES} min) · last {when(last_webhook, now, zone)}"
        f" · {received:,} in all</dd>"
        f"<dt>Failures</dt><dd>{health.failure_streak} in a row</dd></dl>"
        + "".join(f'<p class="problem">{p}</p>' for p in problems)
        + _charts(conn, tenant, now)
        + "</article>")


def _runs_table(conn: Connection, tenants: list[TenantConfig], now: datetime) -> str:
    zones = {t.id: t.zone for t in tenants}
    recent = recent_runs(conn, RECENT_RUNS)
    rows = "".join(
        f'<tr><td data-label="Run"><code title="{escape(x.id)}">{escape(x.id[:8])}</code></td>'
        f'<td data-label="Tenant">{escape(x.tenant_id)}</td><td data-label="Kind">{escape(x.kind)}'
        f'{f" · {escape(x.mode)}" if x.mode else ""}</td>'
        f'<td data-label="Status"><span class="pill {escape(x.status)}">{escape(x.status)}</span></td>'
        f'<td data-label="Records" class="num">{x.processed:,}</td>'
        f'<td data-label="Started">{when(x.started_at, now, zones.get(x.tenant_id, ZoneInfo("UTC")))}</td>'
        f'<td data-label="Took" class="num">{took(x.started_at, x.finished_at)}</td></tr>'
        for x in recent) or '<tr><td colspan="7">No runs yet.</td></tr>'
    return ('<div class="runs"><table><thead><tr><th>Run</th><th>Tenant</th><th>Kind</th><th>Status</th>'
            f"<th>Records</th><th>Started</th><th>Took</th></tr></thead><tbody>{rows}</tbody></table></div>")


def status_page(conn: Connection, tenants: list[TenantConfig], queues: QueuePort, now: datetime) -> str:
    cards = "".join(_card(conn, tenant, now) for tenant in tenants)
    try:
        poison: int | None = queues.count(poison_name(CHANGES_QUEUE))
    except Exception:
        poison = None
    poison_text = "unknown (queue unreachable)" if poison is None else f"{poison:,}"
    checked = now.strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<noscript><meta http-equiv="refresh" content="{REFRESH_SECONDS}"></noscript>'
        f"<title>Sync status</title><style>{STYLE}</style></head>"
        f'<body data-refresh-seconds="{REFRESH_SECONDS}"><main>'
        f'<h1>Sync status</h1><p class="meta">{len(tenants)} tenant(s) · checked '
        f'<time datetime="{now.isoformat()}" id="checked">{checked}</time> · refreshes every {REFRESH_SECONDS} s</p>'
        f'<section class="tenants">{cards or "<p>No tenants configured.</p>"}</section>'
        f'<h2>Poison messages</h2><p class="poison{" some" if poison else ""}" id="poison">{poison_text}</p>'
        f"<h2>Recent runs</h2>{_runs_table(conn, tenants, now)}"
        f"</main><script>{SCRIPT}</script></body></html>")
