"""Read endpoints: a practitioner's dashboard, the tenant's practitioners and per-tenant health.

Every answer is JSON with a machine-readable ``error`` on failure: unknown tenant or
practitioner 404, bad input 400, the database unreachable 503 (with Retry-After); a bug is a 500.
Tenant-scoped reads take the tenant from the route only and filter every query by it.
"""
from __future__ import annotations

import re
from datetime import date

import azure.functions as func

from shared.blueprints.http import Refused, answer, http_function, query_limit, route_tenant
from shared.bootstrap import Runtime
from shared.reads.dashboard import practitioner_dashboard
from shared.reads.health import tenant_health
from shared.reads.openapi import document as openapi_document
from shared.reads.practitioners import practitioner_page
from shared.reads.status_page import status_page
from shared.records import is_fhir_id
from shared.timebounds import RANGE_TEXT, day_in_range

bp = func.Blueprint()
_DAY = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")


def parse_day(text: str) -> date | None:
    """YYYY-MM-DD only (date.fromisoformat also takes 20260105 and 2026-W02-1), within the range
    the dashboard can compute weeks and months for."""
    if not _DAY.match(text):
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:  # 2026-02-30
        return None
    return day if day_in_range(day) else None


@bp.function_name("practitioner_dashboard")
@bp.route(route="tenants/{tenant}/practitioners/{practitioner}/dashboard", methods=["GET"],
          auth_level=func.AuthLevel.FUNCTION)
@http_function("dashboard")
def dashboard_http(rt: Runtime, req: func.HttpRequest) -> func.HttpResponse:
    practitioner_id = req.route_params.get("practitioner", "")
    tenant = route_tenant(rt, req)
    now = rt.clock()
    raw_date = req.params.get("date")
    day = parse_day(raw_date) if raw_date is not None else now.astimezone(tenant.zone).date()
    if day is None:
        raise Refused(400, "bad-date", expected=f"YYYY-MM-DD {RANGE_TEXT}")
    if not is_fhir_id(practitioner_id):  # nothing else can be one (a NUL never reaches a query)
        raise Refused(404, "unknown-practitioner")
    with rt.engine.connect() as conn:
        body = practitioner_dashboard(conn, tenant, practitioner_id, day, now)
    if body is None:
        raise Refused(404, "unknown-practitioner")
    return answer(200, body)


@bp.function_name("practitioners")
@bp.route(route="tenants/{tenant}/practitioners", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@http_function("practitioners")
def practitioners_http(rt: Runtime, req: func.HttpRequest) -> func.HttpResponse:
    """The tenant's live practitioners (id, name, active), ``limit`` a page, after the id ``after``."""
    tenant = route_tenant(rt, req)
    limit = query_limit(req, default=100, maximum=500)
    after = req.params.get("after")
    if after is not None and not is_fhir_id(after):
        raise Refused(400, "bad-after", expected="a practitioner id (1 to 64 of A-Z a-z 0-9 - .)")
    with rt.engine.connect() as conn:
        page = practitioner_page(conn, tenant.id, limit=limit, after=after)
    return answer(200, page)


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@http_function("health")
def health_http(rt: Runtime, req: func.HttpRequest) -> func.HttpResponse:
    """One status per tenant; 503 when any enabled tenant is in error (for load balancers)."""
    now = rt.clock()
    with rt.engine.connect() as conn:
        tenants = [tenant_health(conn, t, now) for t in sorted(rt.tenants.values(), key=lambda t: t.id)]
    worst = "error" if any(t.status == "error" for t in tenants) else (
        "delayed" if any(t.status == "delayed" for t in tenants) else "on_time")
    return answer(503 if worst == "error" else 200,
                  {"status": worst, "checkedAt": now.isoformat(), "tenants": [t.as_dict() for t in tenants]})


@bp.function_name("status_page")
@bp.route(route="status", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@http_function("status")
def status_page_http(rt: Runtime, req: func.HttpRequest) -> func.HttpResponse:
    """The operators' HTML page; a JSON 503 (with Retry-After) when the database does not answer."""
    with rt.engine.connect() as conn:
        page = status_page(conn, sorted(rt.tenants.values(), key=lambda t: t.id), rt.queues, rt.clock())
    return func.HttpResponse(page, status_code=200, mimetype="text/html", charset="utf-8",
                             headers={"Cache-Control": "no-store"})


@bp.function_name("openapi")
@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi_http(req: func.HttpRequest) -> func.HttpResponse:
    return answer(200, openapi_document())
