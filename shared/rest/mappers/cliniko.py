"""Cliniko's records where one column follows from several fields (a spec's ``mapper``)."""
from __future__ import annotations

from datetime import tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any


def patient(record: dict[str, Any], zone: tzinfo) -> dict[str, Any]:
    """An archived patient is no longer active."""
    return {"active": record.get("archived_at") is None}


def appointment(record: dict[str, Any], zone: tzinfo) -> dict[str, Any]:
    """Cliniko keeps an appointment's state in flags; the dashboard wants one status, in the
    order that decides it: cancelled, did not arrive, arrived, booked."""
    if record.get("cancelled_at"):
        status, source = "cancelled", "cancelled"
    elif record.get("did_not_arrive"):
        status, source = "no_show", "did_not_arrive"
    elif record.get("patient_arrived"):
        status, source = "attended", "patient_arrived"
    else:
        status, source = "booked", "booked"
    return {"status": status, "source_status": source}


def invoice(record: dict[str, Any], zone: tzinfo) -> dict[str, Any]:
    """What was paid is what the invoice came to less what is still owed."""
    try:
        return {"total_paid": Decimal(str(record["total_amount"])) - Decimal(str(record["outstanding_amount"]))}
    except (KeyError, InvalidOperation):
        return {}
