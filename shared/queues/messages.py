"""Queue messages: JSON validated by pydantic, small by design: ids — and, for a REST source with
no single-record read, the record its webhook carried (under MAX_MESSAGE_BYTES).

Encoding is the one choice host.json makes (``messageEncoding: none``): the message text is the
JSON itself, which the Functions host hands to the function unchanged.
"""
from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.records import RESOURCE_TYPES, is_fhir_id
from shared.timebounds import checked_instant

CHANGES_QUEUE = "changes"
RECONCILE_QUEUE = "reconcile"
# Azure Storage allows 64 KiB per message; ids-only messages stay far below, and a message over
# this cap is refused at the producer rather than truncated by the service.
MAX_MESSAGE_BYTES = 48 * 1024
# host.json's maxDequeueCount (a unit test keeps them equal): a delivery with this dequeue count is
# the message's last before the host moves it to the poison queue.
MAX_DEQUEUE_COUNT = 5

def _fhir_id(value: str) -> str:
    if not is_fhir_id(value):
        raise ValueError("a FHIR id (1-64 of A-Z a-z 0-9 - .), not dots alone")
    return value


def _entity(value: str) -> str:
    if value not in RESOURCE_TYPES and not _REST_ENTITY.match(value):
        raise ValueError(f"a resource type the mirror keeps ({', '.join(RESOURCE_TYPES)}) or a REST spec's entity "
                         "(lower case)")
    return value


# A FHIR resource type the mirror keeps (Capitalised) or a REST spec's entity (lower case, as
# shared.rest.spec names them): the two never share a name.
_REST_ENTITY = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
Entity = Annotated[str, AfterValidator(_entity)]
# A source id as text: a FHIR id for a FHIR type (checked below), else 1-64 printable characters.
SourceIdText = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
TenantId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
# Times the workers compute with (lags, windows): aware and within shared.timebounds' range.
Instant = Annotated[AwareDatetime, AfterValidator(checked_instant)]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChangeMessage(Message):
    """One change to apply: re-read ``type/id`` from the source and upsert it (or tombstone it)."""

    kind: Literal["change"] = "change"
    tenant: TenantId
    type: Entity
    id: SourceIdText
    action: Literal["create", "update", "delete"] | None = None
    version: Annotated[str, Field(max_length=64)] | None = None
    event_key: Annotated[str, Field(max_length=200)] | None = None  # the webhook's idempotency key
    received_at: Instant | None = None
    event_at: Instant | None = None  # the event's own timestamp, when the notification has one
    # Times this change was put back because the source held us back (429, open circuit).
    deferrals: Annotated[int, Field(ge=1, le=1000)] | None = None
    # The record a REST webhook carried, for a source with no single-record read: applied as is,
    # its version the event's time when the source states none (docs/webhooks.md).
    data: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _fhir_ids(self) -> ChangeMessage:
        if self.type in RESOURCE_TYPES:
            _fhir_id(self.id)
            if self.data is not None:
                raise ValueError("a FHIR change carries no record: it is read from the source")
        return self


class ReconcileMessage(Message):
    """Run (or continue) a reconcile of one tenant."""

    kind: Literal["reconcile"] = "reconcile"
    tenant: TenantId
    reconcile: Literal["full", "incremental", "hot"]
    run_id: Annotated[str, Field(max_length=36)] | None = None  # set on continuations
    # Only these types or entities (a webhook gap's, a sync mode's); all of them when absent. Kept in
    # the run's checkpoint. Names the tenant's source does not list are refused when the run starts.
    types: Annotated[list[Entity], Field(min_length=1, max_length=64)] | None = None
    # A replay: an incremental run whose windows start here, not at the watermarks.
    since: Instant | None = None
    # A sync mode of the tenant (an incremental run of its entities): checked when the run starts.
    mode: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,31}$")] | None = None


class InvalidMessage(ValueError):
    """A message that is not one of ours: it goes to the poison queue, counted, never retried."""


M = TypeVar("M", bound=Message)


def encode(message: Message) -> str:
    text = message.model_dump_json(exclude_none=True)
    if len(text.encode()) > MAX_MESSAGE_BYTES:
        raise ValueError(f"queue message of {len(text.encode()):,} bytes is over {MAX_MESSAGE_BYTES:,}")
    return text


def decode(text: str | bytes, model: type[M]) -> M:
    try:
        return model.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        if isinstance(exc, ValidationError):
            fields = ", ".join(".".join(map(str, e["loc"])) or "(root)" for e in exc.errors(include_input=False))
            raise InvalidMessage(f"not a {model.__name__}: {fields}") from None
        raise InvalidMessage(f"not a {model.__name__}: not JSON") from None
