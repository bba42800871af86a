"""The OpenAPI 3.1 document of the HTTP routes (served at /api/openapi.json).

Written as data, next to the routes it describes; tests/unit/test_function_app.py checks that
every registered HTTP route is here with its method, and the schemathesis run checks that no
generated request makes one answer 5xx.
"""
from __future__ import annotations

from typing import Any

from shared.records import RESOURCE_TYPES

ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
ANY_OBJECT = {"type": "object"}
TENANT = {"name": "tenant", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"}, "example": "demo"}
RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 36}}
KEY: list[dict[str, list[str]]] = [{"functionKey": []}, {"functionCode": []}]
PRACTITIONERS = {"type": "object", "required": ["tenant", "practitioners", "next"], "properties": {
    "tenant": {"type": "string"}, "next": {"type": ["string", "null"]},
    "practitioners": {"type": "array", "items": {"type": "object", "required": ["id", "name", "active"], "properties": {
        "id": {"type": "string"}, "name": {"type": ["string", "null"]}, "active": {"type": ["boolean", "null"]}}}}}}


def _answers(ok: int, *errors: int, ok_schema: dict[str, Any] = ANY_OBJECT) -> dict[str, Any]:
    out: dict[str, Any] = {str(ok): {"description": "OK", "content": {"application/json": {"schema": ok_schema}}}}
    for status in errors:
        out[str(status)] = {"description": "refused, with a machine-readable reason",
                            "content": {"application/json": {"schema": ERROR}}}
    out["503"] = {"description": "storage unavailable: retry after the Retry-After seconds",
                  "content": {"application/json": {"schema": ERROR}}}
    return out


def _op(summary: str, answers: dict[str, Any], *, params: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None, keyed: bool = True) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": params or [], "responses": answers}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if keyed:
        op["security"] = KEY
    return op


def document() -> dict[str, Any]:
    sync_body = {"type": "object", "additionalProperties": False, "required": ["kind"],
                 "properties": {"kind": {"enum": ["full", "incremental", "hot"]},
                                "mode": {"type": "string", "maxLength": 32,
                                         "description": "one of the tenant's sync modes (with kind incremental)"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "FHIR mirror sync service", "version": "1"},
        "servers": [{"url": "/api"}],
        "components": {"securitySchemes": {
            "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
            "functionCode": {"type": "apiKey", "in": "query", "name": "code"}}},
        "paths": {
            "/webhooks/{tenant}/{event}": {"post": _op(
                "Receive a webhook (authenticated by the tenant's own scheme and secrets)",
                {**_answers(202, 400, 401, 403, 404, 413, 415),
                 "200": {"description": "a duplicate delivery, acknowledged"}},
                params=[TENANT, {"name": "event", "in": "path", "required": True, "schema": {"type": "string"},
                                 "example": "appointment-update"}],
                body=ANY_OBJECT, keyed=False)},
            "/tenants/{tenant}/practitioners/{practitioner}/dashboard": {"get": _op(
                "A practitioner's day, week, month and upcoming sessions", _answers(200, 400, 404),
                params=[TENANT, {"name": "practitioner", "in": "path", "required": True,
                                 "schema": {"type": "string", "maxLength": 64}},
                        {"name": "date", "in": "query", "required": False,
                         "schema": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}}])},
            "/tenants/{tenant}/practitioners": {"get": _op(
                "The tenant's live practitioners (id, name, active) in id order; `next` is the `after` of "
                "the following page (null on the last)", _answers(200, 400, 404, ok_schema=PRACTITIONERS),
                params=[TENANT, {"name": "limit", "in": "query", "required": False,
                                 "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}},
                        {"name": "after", "in": "query", "required": False,
                         "schema": {"type": "string", "minLength": 1, "maxLength": 64}}])},
            "/health": {"get": _op("One status per tenant; 503 when any is in error", {
                "200": {"description": "no tenant in error", "content": {"application/json": {"schema": ANY_OBJECT}}},
                "503": {"description": "a tenant is in error, or storage is unavailable",
                        "content": {"application/json": {"schema": ANY_OBJECT}}}}, keyed=False)},
            "/status": {"get": _op("The operators' status page", {
                "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}},
                "503": {"description": "storage unavailable", "content": {"application/json": {"schema": ERROR}}}})},
            "/openapi.json": {"get": _op("This document", {"200": {"description": "OpenAPI 3.1", "content": {
                "application/json": {"schema": ANY_OBJECT}}}}, keyed=False)},
            "/tenants/{tenant}/sync": {"post": _op("Queue a reconcile", _answers(202, 400, 404, 409, 413, 415),
                                                   params=[TENANT], body=sync_body)},
            "/tenants/{tenant}/sync/runs": {"get": _op("Recent runs and a summary", _answers(200, 400, 404), params=[
                TENANT, {"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 100}}])},
            "/tenants/{tenant}/sync/runs/{run_id}": {"get": _op("One run's progress", _answers(200, 404),
                                                                params=[TENANT, RUN_ID])},
            "/tenants/{tenant}/sync/runs/{run_id}/cancel": {"post": _op("Cancel an active run",
                                                                        _answers(200, 404, 409),
                                                                        params=[TENANT, RUN_ID])},
            "/tenants/{tenant}/sync/status": {"get": _op("Freshness, webhooks, breaker, queues, credentials",
                                                         _answers(200, 404), params=[TENANT])},
            "/tenants/{tenant}/sync/replay": {"post": _op(
                "Re-read everything changed since a time", _answers(202, 400, 404, 409), params=[
                    TENANT, {"name": "type", "in": "query", "required": False, "schema": {"type": "string"},
                             "description": "comma-separated entities of the tenant's source (FHIR: "
                                            + ", ".join(RESOURCE_TYPES) + "; a REST source: its spec's)"},
                    {"name": "since", "in": "query", "required": True,
                     "schema": {"type": "string", "format": "date-time"}}])},
            "/sync/cleanup": {"post": _op("Fail runs that went silent", _answers(200))},
            "/tenants/{tenant}/poison/redrive": {"post": _op("Move the tenant's poison messages back (one re-drive "
                                                             "at a time: 409 redrive-running)",
                                                             _answers(200, 404, 409), params=[TENANT])},
        },
    }
