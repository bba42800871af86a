"""The REST source spec: a JSON file, validated strictly at start-up (docs/sources.md).

A spec says how to talk to a source (base URL, auth, rate limit) and, per entity, how to list and
read its records, where they sit in an answer, how to page, how to ask only for changes, and
which columns of which table each field fills. Borrowed in shape from dlt's rest_api and
Airbyte's declarative manifests, kept to what the sources this product serves need.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator, model_validator

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
Path = Annotated[str, Field(pattern=r"^(\$|[A-Za-z0-9_\-\[\]]+(\.[A-Za-z0-9_\-\[\]]+)*)$")]
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
# Placeholders a template may use besides the tenant's own variables.
ENGINE_PLACEHOLDERS = frozenset({"since", "id", "page_size"})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- auth -------------------------------------------------------------------------------------
class NoAuth(Strict):
    kind: Literal["none"]


class BasicAuth(Strict):
    """HTTP Basic from the tenant's ``username`` and ``password`` (Cliniko: the API key as user
    name, no password)."""

    kind: Literal["basic"]


class ApiKeyAuth(Strict):
    """The tenant's ``api_key`` in a header, after an optional prefix (``Bearer ``)."""

    kind: Literal["api-key"]
    header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")] = "Authorization"
    prefix: str = ""


class BodyAuth(Strict):
    """The tenant's ``username`` and ``password`` in the JSON body, under these field names."""

    kind: Literal["body"]
    username_field: Annotated[str, Field(min_length=1)] = "username"
    password_field: Annotated[str, Field(min_length=1)] = "password"


class OAuth2ClientCredentials(Strict):
    """A token from ``token_url`` (any host) for the tenant's ``client_id`` and ``client_secret``,
    sent as HTTP Basic or in the form body; ``grant_type`` in the query or the form."""

    kind: Literal["oauth2-client-credentials"]
    token_url: AnyHttpUrl
    credentials: Literal["basic", "body"] = "body"
    grant_type_in: Literal["query", "body"] = "body"
    scope: str | None = None
    # Tokens are cached for min(expires_in, this) - 60 s.
    max_token_life: Annotated[float, Field(gt=60, le=86_400)] = 3600.0


Auth = Annotated[NoAuth | BasicAuth | ApiKeyAuth | BodyAuth | OAuth2ClientCredentials, Field(discriminator="kind")]
# What each auth kind needs from a tenant (checked when the tenants file is read).
AUTH_CREDENTIALS: dict[str, tuple[str, ...]] = {
    "none": (), "basic": ("username",), "api-key": ("api_key",), "body": ("username", "password"),
    "oauth2-client-credentials": ("client_id", "client_secret"),
}


# -- paginators ---------------------------------------------------------------------------------
class PageNumber(Strict):
    kind: Literal["page"]
    param: str = "page"
    start: Annotated[int, Field(ge=0)] = 1
    size_param: str | None = "per_page"
    total_pages: Path | None = None  # where the answer says how many pages there are


class Offset(Strict):
    kind: Literal["offset"]
    offset_param: str = "offset"
    limit_param: str = "limit"
    total: Path | None = None  # where the answer says how many records there are


class NextLink(Strict):
    """The next page's URL in the answer's body (Cliniko: ``links.next``)."""

    kind: Literal["next-link"]
    path: Path
    size_param: str | None = None


class LinkHeader(Strict):
    """The next page's URL in the ``Link`` header, ``rel="next"`` (RFC 8288)."""

    kind: Literal["link-header"]
    size_param: str | None = None


class Cursor(Strict):
    kind: Literal["cursor"]
    path: Path  # where the answer carries the next cursor (absent, null or "": last page)
    param: str = "cursor"
    size_param: str | None = None


class NoPaging(Strict):
    kind: Literal["none"]


Paginator = Annotated[PageNumber | Offset | NextLink | LinkHeader | Cursor | NoPaging, Field(discriminator="kind")]


# -- requests, filters, mapping -----------------------------------------------------------------
class Request(Strict):
    method: Literal["GET", "POST"] = "GET"
    path: Annotated[str, Field(pattern=r"^/")]
    query: dict[str, str] = Field(default_factory=dict)
    body: dict[str, Any] | None = None  # a JSON object; string values may hold placeholders


class UpdatedAt(Strict):
    field: Path
    # "iso" (ISO 8601, a naive value read in ``zone``), "epoch" (seconds), "epoch-ms", or a
    # strftime format such as "%Y-%m-%d %H:%M:%S".
    format: str = "iso"
    zone: str = "UTC"


class Incremental(Strict):
    """How to ask for changes since a moment: ``param`` = ``template`` with {since} formatted.
    Cliniko: param "q[]", template "updated_at:>={since}"."""

    param: Annotated[str, Field(min_length=1)]
    template: str = "{since}"
    # An upper bound, where the source has one (Cliniko: q[] = updated_at:<{until}): a record
    # changed while its window is read then leaves the window, and the listing's shrinking total
    # says so (the window is read again), instead of moving to the end and shifting another one
    # past the page being read.
    until_param: str | None = None
    until_template: str = "{until}"
    format: str = "iso"  # "iso" (UTC, Z), "iso-offset" (+00:00), "date", or a strftime format
    zone: str = "UTC"
    initial_lookback_days: Annotated[int, Field(ge=0, le=36_500)] = 180
    # The source filters with >= only: the watermark moves to the start of the listing, less
    # this overlap (clock skew between the source's stamps and ours).
    overlap_seconds: Annotated[int, Field(ge=0, le=86_400)] = 120
    # "full": a source that may not know the filter yet (PPB's future updatedSince). A filtered
    # listing answered 400 or 422 is listed again without it, in full (and diffed, for a source
    # without an updated-at field); a source that ignores the filter answers in full anyway.
    fallback: Literal["full"] | None = None


Conversion = Literal["string", "integer", "decimal", "date", "datetime", "boolean", "initials", "enum", "link-id",
                     "json"]


class ColumnMap(Strict):
    """One column: ``field`` (a dotted path; ``fields`` for initials) converted by ``type``."""

    field: Path | None = None
    fields: list[Path] | None = None
    type: Conversion = "string"
    values: dict[str, str | int | bool | None] | None = None  # enum: source value -> stored value
    default: str | int | bool | None = None  # enum: a value not in ``values``
    format: str | None = None  # date/datetime: a strftime format instead of ISO 8601
    zone: str | None = None  # datetime: the zone of a value without one ("tenant": the tenant's)
    length: Annotated[int, Field(ge=1, le=4000)] | None = None  # declared string columns

    @model_validator(mode="after")
    def _source(self) -> ColumnMap:
        if self.type == "initials":
            if not self.fields and self.field is None:
                raise ValueError("initials: give 'fields' (the name parts, in order)")
        elif self.field is None:
            raise ValueError("give 'field' (a dotted path into the record)")
        if self.type == "enum" and not self.values:
            raise ValueError("enum: give 'values' (source value -> stored value)")
        if self.type != "enum" and (self.values is not None or self.default is not None):
            raise ValueError("'values' and 'default' are for type enum")
        return self

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return value if value in (None, "tenant") else _known_zone(value)


def _known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("unknown IANA timezone (for example 'UTC' or 'Africa/Nairobi')") from None
    return value


class DeclaredTable(Strict):
    """A table of the spec's own: created and extended by ``migrate`` (columns are added, never
    dropped). ``unique``: columns whose values together must not repeat among a tenant's live rows
    (HIE's facility codes). A listing page or an event that would repeat them writes nothing: the
    run fails naming the values and records (the sync stays blocked, and alerts, until the source
    fixes them); an event is refused (docs/sources.md, "Unique columns")."""

    name: Name
    unique: list[Name] = Field(default_factory=list)


class Entity(Strict):
    name: Name
    listing: Request = Field(alias="list")
    records: list[Path] = Field(min_length=1)  # tried in order; "$" is the answer itself
    id: Path
    updated_at: UpdatedAt | None = None
    incremental: Incremental | None = None
    paginator: Paginator = Field(default_factory=lambda: NoPaging(kind="none"))
    read: Request | None = None  # one record by {id}; None: the source has none
    read_records: Path = "$"  # where the record sits in a read's answer
    total: Path | None = None  # where a listing's answer states how many records it holds
    table: Name | DeclaredTable
    columns: dict[Name, ColumnMap] = Field(default_factory=dict)  # "column": "field" for a string
    mapper: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")] | None = None

    @field_validator("records", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("columns", mode="before")
    @classmethod
    def _short_columns(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"field": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("updated_at", mode="before")
    @classmethod
    def _short_updated_at(cls, value: Any) -> Any:
        return {"field": value} if isinstance(value, str) else value

    @property
    def table_name(self) -> str:
        return self.table if isinstance(self.table, str) else self.table.name

    @property
    def unique(self) -> tuple[str, ...]:
        return () if isinstance(self.table, str) else tuple(self.table.unique)



class RateLimit(Strict):
    requests: Annotated[int, Field(ge=1)]
    per_seconds: Annotated[float, Field(gt=0)] = 60.0


class PageSize(Strict):
    default: Annotated[int, Field(ge=1)] = 100
    max: Annotated[int, Field(ge=1)] = 100

    @model_validator(mode="after")
    def _ordered(self) -> PageSize:
        if self.default > self.max:
            raise ValueError("default must not exceed max")
        return self


class Webhook(Strict):
    """Events the source sends: ``{action, timestamp, id, data}`` at these paths, signed with
    hex HMAC-SHA256 of the raw body in ``signature_header``."""

    entity: Name
    signature_header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")]
    event_id: Path
    action: Path = "action"
    timestamp: Path | None = "timestamp"
    data: Path = "data"
    deleted_actions: list[str] = Field(default_factory=lambda: ["deleted"])
    replay_window_hours: Annotated[int, Field(ge=1, le=720)] = 24


class Freshness(Strict):
    """How fresh a tenant's mirror must be for its health: ``on_time`` while the last successful
    sync is at most ``on_time_minutes`` old, ``delayed`` up to ``error_after_minutes``, ``error``
    beyond (HIE's registry: 210 and 360, for a sync every 3 hours). Unset: one and two intervals
    of the tenant's incremental schedule."""

    on_time_minutes: Annotated[int, Field(ge=1, le=525_600)]
    error_after_minutes: Annotated[int, Field(ge=1, le=525_600)]

    @model_validator(mode="after")
    def _ordered(self) -> Freshness:
        if self.error_after_minutes < self.on_time_minutes:
            raise ValueError("error_after_minutes must be at least on_time_minutes")
        return self


class SourceSpec(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
    description: str = ""
    base_url: AnyHttpUrl
    auth: Auth
    headers: dict[str, str] = Field(default_factory=dict)
    # Values each tenant gives for the {placeholders} of this spec's requests (PEMS: organization).
    variables: list[Name] = Field(default_factory=list)
    rate_limit: RateLimit | None = None
    page_size: PageSize = Field(default_factory=PageSize)
    entities: list[Entity] = Field(min_length=1)
    webhook: Webhook | None = None
    freshness: Freshness | None = None  # the health thresholds of its tenants, unless a tenant sets its own

    def entity(self, name: str) -> Entity:
        for entity in self.entities:
            if entity.name == name:
                return entity
        raise KeyError(name)

    @model_validator(mode="after")
    def _consistent(self) -> SourceSpec:
        names = [e.name for e in self.entities]
        if len(set(names)) != len(names):
            raise ValueError("entity names must be unique")
        if self.webhook is not None and self.webhook.entity not in names:
            raise ValueError(f"webhook.entity: no entity named {self.webhook.entity!r}")
        return self


def placeholders(template: Any) -> set[str]:
    """The {names} a request template uses (strings inside dicts and lists too)."""
    if isinstance(template, str):
        return set(_PLACEHOLDER.findall(template))
    if isinstance(template, dict):
        return set().union(*(placeholders(v) for v in template.values())) if template else set()
    if isinstance(template, list):
        return set().union(*(placeholders(v) for v in template)) if template else set()
    return set()


def format_check(fmt: str) -> None:
    """A strftime format that formats a moment (not "iso" etc.); raises ValueError if not."""
    if "%" not in fmt:
        raise ValueError(f"unknown format {fmt!r}: 'iso', 'epoch', 'epoch-ms', 'date' or a strftime format")
    datetime(2026, 1, 2, 3, 4, 5).strftime(fmt)
