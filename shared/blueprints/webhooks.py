"""The webhook HTTP function: POST /api/webhooks/{tenant}/{event} → authenticate, enqueue, 202.

Anonymous at the Functions level: each delivery is authenticated by its tenant's own scheme and
secrets (a function key would be one shared secret for every tenant).
"""
from __future__ import annotations

import json
import logging
import time

import azure.functions as func

from shared import failpoints
from shared.bootstrap import runtime
from shared.telemetry import telemetry
from shared.webhooks.receive import Answer, receive_webhook

log = logging.getLogger("shared.functions")
bp = func.Blueprint()


def json_response(answer: Answer) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(answer.body), status_code=answer.status, headers=answer.headers,
                             mimetype="application/json")


@bp.function_name("receive_webhook")
@bp.route(route="webhooks/{tenant}/{event}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def receive_webhook_http(req: func.HttpRequest) -> func.HttpResponse:
    began = time.perf_counter()
    tenant_id, event = req.route_params.get("tenant", ""), req.route_params.get("event", "")
    try:
        rt = runtime()
        tenant = rt.tenants.get(tenant_id)
    except Exception as exc:
        log.error("webhook outcome=unavailable reason=%s", exc.__class__.__name__)
        return json_response(Answer(503, {"error": "temporarily-unavailable"}, {"Retry-After": "30"}))
    answer = receive_webhook(rt.engine, rt.queues, tenant, event, dict(req.headers), req.get_body(),
                             rt.clock(), rt.metrics)
    if answer.status == 202:
        failpoints.hit("webhook.after_enqueue")
    if tenant is not None:  # an unknown tenant's name comes from the URL: not a dimension
        telemetry().webhook_answered(tenant.id, answer_outcome(answer), (time.perf_counter() - began) * 1000)
    return json_response(answer)


def answer_outcome(answer: Answer) -> str:
    if answer.status == 202:
        return "enqueued"
    if answer.body.get("duplicate"):
        return "duplicate"
    return "unavailable" if answer.status >= 500 else "rejected"
