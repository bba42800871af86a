"""RestSource: a source described by a spec file — the REST implementation of the source
protocol, on the same request path as FHIR (SourceHttp: gates, breaker, budget, retries).

A listing renders the entity's request template, adds the paginator's parameters and, for a
window, the incremental filter; each answer's records are found at the spec's path (an answer
shaped otherwise fails the run, naming the path, before anything of that page is written) and
mapped on the engine's worker thread. A record's version is its updated-at field, or — for a
source without one — the moment its page was asked for (docs/sources.md).
"""
from __future__ import annotations

import base64
import functools
import logging
import re
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from shared.records import MirrorRow
from shared.rest.mapping import EntityMapper, RecordError, ShapeError, extract_records
from shared.rest.paging import advance, first_state, request, total_records
from shared.rest.paths import lookup
from shared.rest.spec import (
    ApiKeyAuth,
    BasicAuth,
    BodyAuth,
    DeclaredTable,
    Entity,
    Incremental,
    OAuth2ClientCredentials,
    SourceSpec,
)
from shared.source.budget import BULK, REALTIME
from shared.source.errors import BadResponse, Gone, NotFound, Rejected
from shared.source.http import SourceHttp
from shared.source.protocol import Mapped, Page, Unmappable, Unreadable, Window

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")

log = logging.getLogger("shared.source")
UNFILTERED = "unfiltered"  # in a listing's paging state: the source refused the change filter (fallback full)


def render(template: Any, values: dict[str, str], *, path: bool = False) -> Any:
    """A template with its {placeholders} filled (in a path, percent-encoded)."""
    if isinstance(template, str):
        return _PLACEHOLDER.sub(lambda m: quote(values[m.group(1)], safe="") if path else values[m.group(1)],
                                template)
    if isinstance(template, dict):
        return {k: render(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [render(v, values) for v in template]
    return template


def format_since(moment: datetime, incremental: Incremental) -> str:
    local = moment.astimezone(ZoneInfo(incremental.zone))
    if incremental.format == "iso":
        return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    if incremental.format == "iso-offset":
        return local.isoformat(timespec="seconds")
    if incremental.format == "date":
        return local.date().isoformat()
    if incremental.format == "epoch":
        return str(int(moment.timestamp()))
    return local.strftime(incremental.format)


def map_records(mapper: EntityMapper, records: list[dict[str, Any]], observed_at: datetime) -> Mapped:
    """A page's records as rows; one that cannot be mapped is counted, the rest are kept. Pure."""
    mapped = Mapped([], processed=len(records))
    for record in records:
        try:
            mapped.rows.append(mapper.row(record, observed_at))
        except RecordError:
            mapped.errored += 1
    return mapped


def _total(entity: Entity, body: Any) -> int | None:
    stated = lookup(body, entity.total) if entity.total else None
    if isinstance(stated, int) and not isinstance(stated, bool):
        return stated
    return total_records(entity.paginator, body)


class RestSource(SourceHttp):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spec: SourceSpec = self.tenant.rest_spec()
        self._mappers = {e.name: EntityMapper(e, self.tenant.zone, declared=isinstance(e.table, DeclaredTable))
                         for e in self.spec.entities}

    # -- the source protocol ----------------------------------------------------------------
    def entities(self, kind: str) -> tuple[str, ...]:
        return () if kind == "hot" else tuple(e.name for e in self.spec.entities)

    def table(self, entity: str) -> str:
        return self.spec.entity(entity).table_name

    def filters_changes(self, entity: str) -> bool:
        return self.spec.entity(entity).incremental is not None

    def readable(self, entity: str) -> bool:
        return self.spec.entity(entity).read is not None

    def page_size(self) -> int:
        return min(self.tenant.page_size or self.spec.page_size.default, self.spec.page_size.max)

    async def listing(self, entity: str, window: Window | None, *, resume: Any | None, page_size: int,
                      priority: str = BULK) -> AsyncGenerator[Page, None]:
        e = self.spec.entity(entity)
        values = {**self.tenant.variables, "page_size": str(page_size)}
        state: dict[str, Any] = resume if isinstance(resume, dict) else first_state(e.paginator)
        while True:
            ask = request(e.paginator, state, page_size)
            unfiltered = bool(state.get(UNFILTERED))  # the source refused the filter earlier in this listing
            if ask.url is not None:
                self._require_same_origin(ask.url, "next link")
                url, params = ask.url, None
            else:
                url = self.base + render(e.listing.path, values, path=True)
                params = [*render(e.listing.query, values).items(), *ask.params.items(),
                          *([] if unfiltered else self._filter(e, window))]
            observed = datetime.fromtimestamp(self.wall(), UTC)  # before asking: a later change is newer
            try:
                answer = await self._request(e.listing.method, url, params, self._body(e.listing.body, values),
                                             priority)
            except Rejected as exc:
                if (unfiltered or ask.url is not None or not self._filter(e, window) or e.incremental is None
                        or e.incremental.fallback != "full" or exc.status not in (400, 422)):
                    raise
                # The source does not know the filter (yet): list this window in full instead.
                log.info("source tenant=%s entity=%s: the change filter was refused (HTTP %s); listing in full",
                         self.tenant.id, entity, exc.status)
                state = {**state, UNFILTERED: True}
                continue
            try:
                records = extract_records(answer.body, e.records)
            except ShapeError as exc:
                raise BadResponse(self.tenant.id, f"{entity}: unexpected answer: {exc} (the spec's records path "
                                  f"{exc.path!r} is missing; nothing from this page was written)",
                                  path=e.listing.path) from None
            following = advance(e.paginator, state, body=answer.body, link_header=answer.headers.get("link"),
                                count=len(records), page_size=page_size, url=answer.url)
            if unfiltered and following is not None:
                following = {**following, UNFILTERED: True}
            yield Page(functools.partial(map_records, self._mappers[entity], records, observed), following,
                       _total(e, answer.body))
            if following is None:
                return
            state = following

    async def fetch(self, entity: str, source_id: str, *, priority: str = REALTIME) -> MirrorRow | None:
        e = self.spec.entity(entity)
        if e.read is None:
            raise Unreadable(f"{self.spec.name}: {entity} has no single-record read")
        values = {**self.tenant.variables, "id": source_id, "page_size": str(self.page_size())}
        url = self.base + render(e.read.path, values, path=True)
        observed = datetime.fromtimestamp(self.wall(), UTC)
        try:
            answer = await self._request(e.read.method, url, list(render(e.read.query, values).items()),
                                         self._body(e.read.body, values), priority)
        except (NotFound, Gone):
            return None
        record = lookup(answer.body, e.read_records)
        if not isinstance(record, dict):
            raise BadResponse(self.tenant.id, f"{entity}: unexpected answer: no record at {e.read_records!r}",
                              path=e.read.path)
        try:
            return self._mappers[entity].row(record, observed)
        except RecordError as exc:
            raise Unmappable(f"{entity} {source_id}: {exc}") from None

    def payload_row(self, entity: str, record: dict[str, Any], seen_at: datetime) -> MirrorRow:
        try:
            return self._mappers[entity].row(record, seen_at)
        except RecordError as exc:
            raise Unmappable(f"{entity}: {exc}") from None

    # -- authentication -----------------------------------------------------------------------
    async def _credential(self) -> str | None:
        if isinstance(self.spec.auth, OAuth2ClientCredentials):
            return await self.tokens.token(self.tenant)
        return None

    def _headers(self, token: str | None) -> dict[str, str]:
        headers = {"User-Agent": self.user_agent, "Accept": "application/json", **self.spec.headers}
        auth = self.spec.auth
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        elif isinstance(auth, BasicAuth):
            pair = f"{self.tenant.credential('username')}:{self.tenant.credential('password')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif isinstance(auth, ApiKeyAuth):
            headers[auth.header] = auth.prefix + self.tenant.credential("api_key")
        return headers

    def _body(self, template: dict[str, Any] | None, values: dict[str, str]) -> dict[str, Any] | None:
        auth = self.spec.auth
        if template is None and not isinstance(auth, BodyAuth):
            return None
        body = dict(render(template or {}, values))
        if isinstance(auth, BodyAuth):
            body[auth.username_field] = self.tenant.credential("username")
            body[auth.password_field] = self.tenant.credential("password")
        return body

    def _filter(self, entity: Entity, window: Window | None) -> list[tuple[str, str]]:
        incremental = entity.incremental
        if window is None or incremental is None:
            return []
        since = window.start - timedelta(seconds=incremental.overlap_seconds)
        bounds = [(incremental.param, incremental.template.replace("{since}", format_since(since, incremental)))]
        if incremental.until_param is not None:
            bounds.append((incremental.until_param,
                           incremental.until_template.replace("{until}", format_since(window.end, incremental))))
        return bounds
