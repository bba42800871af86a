"""FhirClient: a tenant's FHIR R4 source, read safely — the FHIR implementation of the source
protocol (shared/source/protocol.py); the request path is SourceHttp's.

Pages are streamed (an async generator following Bundle.link[next]); nothing loads a whole
result set. A token refused with 401 or an ``expired`` OperationOutcome is refreshed once.
Entities are resource types; a listing's window is a half-open ``_lastUpdated`` range (the hot
window: Appointment ``date``); a page resumes at its Bundle's next link.
"""
from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from shared.fhir.transform import TABLE_FOR_TYPE, TransformError, UnsupportedResourceType, transform_resource
from shared.records import RESOURCE_TYPES, MirrorRow, is_fhir_id
from shared.source.budget import BULK, REALTIME
from shared.source.errors import BadResponse, Gone, NotFound, Rejected
from shared.source.http import SourceHttp, breaker_key, mask_url
from shared.source.protocol import Mapped, Page, Unmappable, Window

DEFAULT_PAGE_SIZE = 100
HOT_TYPES = ("Appointment",)

__all__ = ["FhirClient", "breaker_key", "mask_url", "window_params"]


def window_params(start: datetime, end: datetime) -> dict[str, list[str]]:
    def fmt(t: datetime) -> str:
        return t.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return {"_lastUpdated": [f"ge{fmt(start)}", f"lt{fmt(end)}"]}


def _expired_outcome(body: Any) -> bool:
    return (isinstance(body, dict) and body.get("resourceType") == "OperationOutcome"
            and any(isinstance(i, dict) and i.get("code") == "expired" for i in body.get("issue", [])))


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def next_link(bundle: dict[str, Any]) -> str | None:
    return next((link.get("url") for link in bundle.get("link", [])
                 if isinstance(link, dict) and link.get("relation") == "next"), None)


def map_bundle(bundle: dict[str, Any], resource_type: str) -> Mapped:
    """A search page's resources of this type as rows (included resources and OperationOutcomes
    are not this type's listing). Pure."""
    mapped = Mapped([])
    for entry in bundle.get("entry", []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
            continue
        mapped.processed += 1
        try:
            mapped.rows.append(transform_resource(resource))
        except UnsupportedResourceType:
            continue
        except TransformError:
            mapped.errored += 1
    return mapped


class FhirClient(SourceHttp):
    # -- the source protocol ----------------------------------------------------------------
    def entities(self, kind: str) -> tuple[str, ...]:
        return HOT_TYPES if kind == "hot" else RESOURCE_TYPES

    def table(self, entity: str) -> str:
        return TABLE_FOR_TYPE[entity]

    def filters_changes(self, entity: str) -> bool:
        return True

    def readable(self, entity: str) -> bool:
        return True

    def page_size(self) -> int:
        return self.tenant.page_size or DEFAULT_PAGE_SIZE

    async def listing(self, entity: str, window: Window | None, *, resume: Any | None, page_size: int,
                      priority: str = BULK) -> AsyncGenerator[Page, None]:
        params: dict[str, Any] = {}
        if window is not None and window.on == "date":
            params["date"] = [f"ge{_iso(window.start)}", f"lt{_iso(window.end)}"]
        elif window is not None:
            params.update(window_params(window.start, window.end))
        params["_count"] = page_size
        async for bundle in self.pages(entity, params, priority=priority, start_url=resume):
            total = bundle.get("total")
            yield Page(functools.partial(map_bundle, bundle, entity), next_link(bundle),
                       total if isinstance(total, int) and not isinstance(total, bool) else None)

    def payload_row(self, entity: str, record: dict[str, Any], seen_at: datetime) -> MirrorRow:
        raise Unmappable("FHIR notifications are never trusted for content: the resource is re-read")

    async def fetch(self, entity: str, source_id: str, *, priority: str = REALTIME) -> MirrorRow | None:
        try:
            resource = await self.read(entity, source_id, priority=priority)
        except (NotFound, Gone):
            return None
        try:
            return transform_resource(resource)
        except TransformError as exc:
            raise Unmappable(str(exc)) from None

    # -- public -----------------------------------------------------------------------------
    async def read(self, resource_type: str, resource_id: str, *, priority: str = REALTIME) -> dict[str, Any]:
        """The current resource; raises NotFound (404) or Gone (410). The id goes into the path
        percent-encoded, and one that would not read back as itself ("..") is never sent."""
        if not is_fhir_id(resource_id):
            raise Rejected(self.tenant.id, "not a FHIR id: not read", path=f"/{resource_type}")
        body = await self._get(f"{self.base}/{resource_type}/{quote(resource_id, safe='')}", None, priority)
        if not isinstance(body, dict) or body.get("resourceType") != resource_type:
            raise BadResponse(self.tenant.id, "not the resource asked for", path=f"/{resource_type}/{resource_id}")
        return body

    async def pages(self, resource_type: str, params: dict[str, Any] | None = None, *,
                    priority: str = BULK, start_url: str | None = None) -> AsyncGenerator[dict[str, Any], None]:
        """Search pages (Bundles) one at a time, following Bundle.link[relation=next];
        ``start_url`` resumes at a next link saved in a checkpoint."""
        url: str | None = f"{self.base}/{resource_type}"
        query: dict[str, Any] | None = params
        if start_url is not None:
            self._require_same_origin(start_url, "resume link")
            url, query = start_url, None
        while url:
            bundle = await self._get(url, query, priority)
            if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
                raise BadResponse(self.tenant.id, "search did not answer a Bundle", path=f"/{resource_type}")
            yield bundle
            url = next_link(bundle)
            query = None  # the next link carries the query
            if url is not None:
                self._require_same_origin(url, "next link")

    async def resources(self, resource_type: str, params: dict[str, Any] | None = None, *,
                        priority: str = BULK) -> AsyncIterator[dict[str, Any]]:
        async for bundle in self.pages(resource_type, params, priority=priority):
            for entry in bundle.get("entry", []):
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(resource, dict) and resource.get("resourceType") == resource_type:
                    yield resource

    async def changed(self, resource_type: str, start: datetime, end: datetime, *, count: int = 100,
                      priority: str = BULK) -> AsyncIterator[dict[str, Any]]:
        """Everything of a type last updated in [start, end)."""
        params = {**window_params(start, end), "_count": count}
        async for resource in self.resources(resource_type, params, priority=priority):
            yield resource

    def _headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "User-Agent": self.user_agent, "Accept": "application/fhir+json"}

    def _refused(self, status: int, body: Any) -> bool:
        return status == 401 or _expired_outcome(body)

    async def _get(self, url: str, params: dict[str, Any] | None, priority: str) -> Any:
        return (await self._request("GET", url, params, None, priority)).body
