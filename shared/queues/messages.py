"""Queue messages: JSON validated by pydantic, small by design (ids, never resource bodies).

Encoding is the one choice host.json makes (``messageEncoding: none``): the message text is the
JSON itself, which the Functions host hands to the function unchanged.
"""
from __future__ import annotations

import json
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from shared.records import RESOURCE_TYPES, ResourceType, is_fhir_id
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


Id = Annotated[str, AfterValidator(_fhir_id)]
TenantId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
# Times the workers compute with (lags, windows): aware and within shared.timebounds' range.
Instant = Annotated[AwareDatetime, AfterValidator(checked_instant)]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChangeMessage(Message):
    """One change to apply: re-read ``type/id`` from the source and upsert it (or tombstone it)."""

    kind: Literal["change"] = "change"
    tenant: TenantId
    type: ResourceType
    id: Id
    action: Literal["create", "update", "delete"] | None = None
    version: Annotated[str, Field(max_length=64)] | None = None
    event_key: Annotated[str, Field(max_length=200)] | None = None  # the webhook's idempotency key
    received_at: Instant | None = None
    event_at: Instant | None = None  # the event's own timestamp, when the notification has one
    # Times this change was put back because the source held us back (429, open circuit).
    deferrals: Annotated[int, Field(ge=1, le=1000)] | None = None


class ReconcileMessage(Message):
    """Run (or continue) a reconcile of one tenant."""

    kind: Literal["reconcile"] = "reconcile"
    tenant: TenantId
    reconcile: Literal["full", "incremental", "hot"]
    run_id: Annotated[str, Field(max_length=36)] | None = None  # set on continuations
    # Only these types (a webhook gap's); all of them when absent. Kept in the run's checkpoint.
    types: Annotated[list[ResourceType], Field(min_length=1, max_length=len(RESOURCE_TYPES))] | None = None
    # A replay: an incremental run whose windows start here, not at the watermarks.
    since: Instant | None = None


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
