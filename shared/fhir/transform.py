"""Pure transformers: one FHIR R4 resource dict in, one MirrorRow out (no I/O, no clock).

A resource that cannot be mapped raises TransformError naming its type and id — never the
values it holds, so the message is safe to log.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import ValidationError

from shared.fhir import models as m
from shared.fhir.references import parse_reference, reference_parts
from shared.records import MirrorRow

# A resource without meta.lastUpdated gets the lowest possible version: any real one wins.
UNKNOWN_UPDATED_AT = datetime(1970, 1, 1, tzinfo=UTC)

APPOINTMENT_STATUS = {
    "proposed": "pending", "pending": "pending", "waitlist": "pending",
    "booked": "booked", "arrived": "arrived", "checked-in": "arrived",
    "fulfilled": "attended", "cancelled": "cancelled", "noshow": "no_show",
    "entered-in-error": "error",
}
# FHIR R4 InvoiceStatus plus Halaxy's own ("active", "write-off").
INVOICE_STATUS = {
    "draft": "draft", "issued": "issued", "active": "issued", "balanced": "paid",
    "write-off": "written_off", "cancelled": "cancelled", "entered-in-error": "error",
}
# Halaxy's appointment-participant-status extension: the client's attendance, which is what
# the practice sees as the appointment's status (Appointment.status stays "booked").
ATTENDANCE_STATUS = {
    "booked": "booked", "confirmed": "booked", "pending": "pending", "arrived": "arrived",
    "attended": "attended", "cancelled": "cancelled", "rejected": "cancelled",
    "did-not-attend": "no_show", "did not attend": "no_show", "dna": "no_show",
    "noshow": "no_show", "no-show": "no_show",
}
# A group session takes the "most held" attendance of its clients.
ATTENDANCE_RANK = ("attended", "arrived", "booked", "pending", "no_show", "cancelled")
# FHIR participant statuses meaning the client will not attend.
PARTICIPANT_CANCELLED = {"declined"}
# Sessions that count towards a client's session number.
COUNTED_STATUSES = {"booked", "arrived", "attended"}


class TransformError(ValueError):
    """A resource that cannot be mapped. Carries type and id, never resource content."""

    def __init__(self, resource_type: str, resource_id: str | None, reason: str) -> None:
        self.resource_type = resource_type
        self.resource_id = resource_id
        self.reason = reason
        super().__init__(f"{resource_type}/{resource_id or '?'}: {reason}")


class UnsupportedResourceType(TransformError):
    """A resource type the mirror does not store (an Observation in an export, say)."""


R = TypeVar("R", bound=m.Resource)


def transform_resource(resource: dict[str, Any]) -> MirrorRow:
    """Map any supported resource; raises TransformError / UnsupportedResourceType."""
    resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(resource_type, str):
        raise TransformError("?", None, "not a FHIR resource (no resourceType)")
    transformer = TRANSFORMERS.get(resource_type)
    if transformer is None:
        raise UnsupportedResourceType(resource_type, _raw_id(resource), "resource type is not mirrored")
    return transformer(resource)


def _raw_id(resource: dict[str, Any]) -> str | None:
    value = resource.get("id")
    return value if isinstance(value, str) else None


def _parse(model: type[R], resource: dict[str, Any]) -> R:
    try:
        parsed = model.model_validate(resource)
    except ValidationError as exc:
        where = ", ".join(
            ".".join(str(p) for p in e["loc"]) + f" ({e['type']})"
            for e in exc.errors(include_input=False, include_context=False, include_url=False)
        )
        raise TransformError(model.__name__, _raw_id(resource), f"invalid element(s): {where}") from None
    if not parsed.id:
        raise TransformError(model.__name__, None, "missing id")
    return parsed


def _row(table: str, res: m.Resource, content: dict[str, Any]) -> MirrorRow:
    return MirrorRow(
        table=table,
        source_id=res.id or "",
        source_version=res.meta.versionId,
        source_updated_at=_utc(res.meta.lastUpdated) or UNKNOWN_UPDATED_AT,
        content=content,
    )


def _utc(value: datetime | None) -> datetime | None:
    # FHIR instants carry an offset; a naive value (a date-only dateTime, a sloppy export) is UTC.
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _text(value: str | None) -> str | None:
    """Trimmed text, or None when blank."""
    return value.strip() or None if value else None


def _given(name: m.HumanName | None) -> str | None:
    return _text(" ".join(g.strip() for g in name.given)) if name else None


def choose_name(names: list[m.HumanName]) -> m.HumanName | None:
    """official, then usual, then the first name given."""
    for use in ("official", "usual"):
        for name in names:
            if name.use == use:
                return name
    return names[0] if names else None


def initials(name: m.HumanName | None) -> str | None:
    if name is None:
        return None
    words = [g for g in name.given if g.strip()][:1] + ([name.family] if name.family and name.family.strip() else [])
    if not words and name.text:
        words = name.text.split()[:1] + name.text.split()[1:][-1:]
    letters = "".join(w.strip()[0].upper() for w in words if w.strip())
    return letters or None


def display_name(name: m.HumanName | None) -> str | None:
    if name is None:
        return None
    if name.text:
        return name.text.strip() or None
    parts = [*name.prefix, *name.given, name.family or ""]
    return " ".join(p.strip() for p in parts if p and p.strip()) or None


def choose_contact(telecom: list[m.ContactPoint], systems: tuple[str, ...], prefer_use: str | None = None) -> str | None:
    """The best current contact of the given systems: preferred use, then rank, then order."""
    candidates = [(i, c) for i, c in enumerate(telecom)
                  if c.system in systems and c.value and c.value.strip() and c.use != "old"]
    if not candidates:
        return None
    best = min(candidates, key=lambda ic: (ic[1].use != prefer_use, ic[1].rank if ic[1].rank is not None else 1 << 30, ic[0]))
    value = best[1].value
    return value.strip() if value else None


def _birth_date(resource: m.Patient) -> date | None:
    return _day(resource.birthDate, "Patient", resource.id, "birthDate")


def _day(value: str | None, resource_type: str, resource_id: str | None, element: str) -> date | None:
    """A FHIR date (or the date of a dateTime); None for partial dates (year, year-month)."""
    if value is None or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise TransformError(resource_type, resource_id, f"{element} is not a FHIR date") from None


def _money(value: m.Money | None) -> Decimal | None:
    return None if value is None or value.value is None else value.value.quantize(Decimal("0.01"))


def transform_practitioner(resource: dict[str, Any]) -> MirrorRow:
    res = _parse(m.Practitioner, resource)
    name = choose_name(res.name)
    return _row("practitioners", res, {
        "display_name": display_name(name),
        "given_name": _given(name),
        "family_name": _text(name.family) if name else None,
        "email": choose_contact(res.telecom, ("email",), "work"),
        "phone": choose_contact(res.telecom, ("phone", "sms"), "work"),
        "active": res.active,
    })


def transform_practitioner_role(resource: dict[str, Any]) -> MirrorRow:
    res = _parse(m.PractitionerRole, resource)
    code = res.code[0] if res.code else None
    return _row("practitioner_roles", res, {
        "practitioner_id": parse_reference(res.practitioner, "Practitioner"),
        "organization_id": parse_reference(res.organization, "Organization"),
        "role_code": next((c.code for c in code.coding if c.code), None) if code else None,
        "role_display": code.label() if code else None,
        "active": res.active,
    })


def transform_patient(resource: dict[str, Any]) -> MirrorRow:
    res = _parse(m.Patient, resource)
    name = choose_name(res.name)
    carers = [r for r in res.generalPractitioner if parse_reference(r, "Practitioner")]
    return _row("clients", res, {
        "practitioner_id": parse_reference(carers[0], "Practitioner") if carers else None,
        "given_name": _given(name),
        "family_name": _text(name.family) if name else None,
        "initials": initials(name),
        "birth_date": _birth_date(res),
        "gender": res.gender,
        "email": choose_contact(res.telecom, ("email",), "home"),
        "phone": choose_contact(res.telecom, ("phone", "sms"), "mobile"),
        "active": res.active,
    })


def _attendance(res: m.Appointment, participant: m.AppointmentParticipant) -> str | None:
    """A client's attendance from Halaxy's participant-status extension (or modifierExtension),
    else from the FHIR participant status; None when neither says anything."""
    for ext in (*participant.modifierExtension, *participant.extension):
        if ext.url.rstrip("/").endswith("participant-status"):
            code = (ext.code() or "").strip().lower()
            if code not in ATTENDANCE_STATUS:
                raise TransformError("Appointment", res.id, f"unmapped participant status {code!r}")
            return ATTENDANCE_STATUS[code]
    return "cancelled" if participant.status in PARTICIPANT_CANCELLED else None


def transform_appointment(resource: dict[str, Any]) -> MirrorRow:
    res = _parse(m.Appointment, resource)
    if res.status not in APPOINTMENT_STATUS:
        raise TransformError("Appointment", res.id, f"unmapped status {res.status!r}")
    status = APPOINTMENT_STATUS[res.status]
    # Each participant's reference parsed once: (participant, (type, id) or None).
    actors = [(p, reference_parts(p.actor)) for p in res.participant]
    patients = [(p, ref[1]) for p, ref in actors if ref and ref[0] == "Patient"]
    attendance = [a for p, _id in patients if (a := _attendance(res, p))]
    if status not in ("cancelled", "error") and attendance and (
            len(attendance) == len(patients) or "cancelled" not in attendance):
        # Every client's attendance known (or news that someone came): it decides the status.
        status = min(attendance, key=ATTENDANCE_RANK.index)
    client_ids = [pid for _p, pid in patients]
    practitioner = next((ref[1] for _p, ref in actors if ref and ref[0] == "Practitioner"), None)
    role = next((ref[1] for _p, ref in actors if ref and ref[0] == "PractitionerRole"), None)
    service = next((c.label() for c in res.serviceType if c.label()), None) or (
        res.appointmentType.label() if res.appointmentType else None)
    start, end = _utc(res.start), _utc(res.end)
    if start and end and end < start:
        raise TransformError("Appointment", res.id, "end is before start")
    return _row("sessions", res, {
        "practitioner_id": practitioner,
        "practitioner_role_id": role,
        "client_id": client_ids[0] if client_ids else None,
        "client_ids": " ".join(c for c in client_ids if c) or None,
        "start_at": start,
        "end_at": end,
        "status": status,
        "source_status": res.status,
        "service": service,
    })


def transform_invoice(resource: dict[str, Any]) -> MirrorRow:
    res = _parse(m.Invoice, resource)
    if res.status not in INVOICE_STATUS:
        raise TransformError("Invoice", res.id, f"unmapped status {res.status!r}")
    actors = [*res.practitioner, *(p.actor for p in res.participant)]
    gross, balance = _money(res.totalGross), _money(res.totalBalance)
    status = INVOICE_STATUS[res.status]
    if status == "issued" and balance == 0 and gross:
        status = "paid"  # Halaxy keeps a settled invoice "active"; its balance says it is paid
    return _row("invoices", res, {
        "practitioner_id": _first_ref(actors, "Practitioner"),
        "practitioner_role_id": _first_ref(actors, "PractitionerRole"),
        "client_id": parse_reference(res.subject, "Patient") or _first_ref(res.recipient, "Patient"),
        "status": status,
        "source_status": res.status,
        "issued_at": _utc(res.date),
        "total_net": _money(res.totalNet),
        "total_gross": gross,
        "total_paid": _money(res.totalPaid),
        "total_balance": balance,
        "currency": next((x.currency for x in (res.totalGross, res.totalNet) if x and x.currency), None),
    })


# Halaxy limits a referral by appointments, hours, minutes or money; only an appointment limit is
# a number of sessions. Units naming sessions (or none at all) count; any other unit does not.
SESSION_UNITS = {"", "appointment", "appointments", "session", "sessions", "visit", "visits", "{appointment}",
                 "{appointments}", "{session}", "{sessions}", "1"}
# Referrals that no longer fund anything.
REFERRAL_STATUS = {"active": "active", "completed": "completed", "on-hold": "on_hold", "draft": "draft",
                   "revoked": "revoked", "cancelled": "revoked", "entered-in-error": "error", "unknown": "active"}
MAX_SESSIONS = 10_000


def _referral_count(res: m.Referral, ext: m.Extension) -> int | None:
    """An extension's whole number of sessions, or None when it counts something else."""
    if ext.valueQuantity is not None:
        unit = (ext.valueQuantity.code or ext.valueQuantity.unit or "").strip().lower()
        if unit not in SESSION_UNITS:
            return None
        value: Any = ext.valueQuantity.value
    else:
        value = next((v for v in (ext.valueInteger, ext.valueDecimal, ext.valueString) if v is not None), None)
    if value is None:
        return None
    try:
        number = Decimal(str(value).strip())
    except ArithmeticError:
        raise TransformError("Referral", res.id, "a session count is not a number") from None
    if number != number.to_integral_value() or not 0 <= number <= MAX_SESSIONS:
        raise TransformError("Referral", res.id, f"a session count is not a whole number from 0 to {MAX_SESSIONS}")
    return int(number)


def _referral_counts(res: m.Referral) -> tuple[int | None, int]:
    """(appointment limit or None, prior appointments) from the referral's extensions, matched on
    the last segment of their URL: ``…limit…`` and ``…prior…``. A limit-type extension naming
    hours, minutes or money means the limit is not a number of sessions."""
    limit, prior, other_unit = None, 0, False
    for ext in res.extension:
        name = ext.url.rstrip("/").rsplit("/", 1)[-1].lower()
        if "prior" in name:
            prior = _referral_count(res, ext) or 0
        elif "limit" in name and ("type" in name or "unit" in name):
            other_unit = (ext.code() or "").strip().lower() not in SESSION_UNITS
        elif "limit" in name:
            limit = _referral_count(res, ext)
    return (None if other_unit else limit), prior


def transform_referral(resource: dict[str, Any]) -> MirrorRow:
    res = _parse(m.Referral, resource)
    status = (res.status or "active").strip().lower()
    if status not in REFERRAL_STATUS:
        raise TransformError("Referral", res.id, f"unmapped status {status!r}")
    limit, prior = _referral_counts(res)
    period = res.period or m.Period()
    starts, ends = _day(period.start, "Referral", res.id, "period.start"), _day(period.end, "Referral", res.id, "period.end")
    if starts and ends and ends < starts:
        raise TransformError("Referral", res.id, "period ends before it starts")
    return _row("referrals", res, {
        "client_id": parse_reference(res.subject, "Patient") or parse_reference(res.patient, "Patient"),
        "practitioner_id": parse_reference(res.performer, "Practitioner"),
        "status": REFERRAL_STATUS[status],
        "name": _text(res.referralDefinition),
        "starts_on": starts,
        "ends_on": ends,
        "session_limit": limit,
        "prior_sessions": prior,
        "preferred": res.priority,
    })


def _first_ref(refs: Iterable[m.Reference | None], resource_type: str) -> str | None:
    return next((r for ref in refs if (r := parse_reference(ref, resource_type))), None)


def session_numbers(sessions: Iterable[tuple[str, datetime | None, str]]) -> dict[str, int]:
    """Number one client's sessions 1, 2, 3… in start order, counting only booked/attended ones.

    Input: (session id, start, status) for every session of the client. Cancelled, no-show,
    pending and erroneous sessions get no number. Ties in start time are broken by id.
    """
    counted = sorted((start, sid) for sid, start, status in sessions if status in COUNTED_STATUSES and start)
    return {sid: n for n, (_start, sid) in enumerate(counted, start=1)}


TABLE_FOR_TYPE = {
    "Practitioner": "practitioners",
    "PractitionerRole": "practitioner_roles",
    "Patient": "clients",
    "Appointment": "sessions",
    "Invoice": "invoices",
    "Referral": "referrals",
}

TRANSFORMERS: dict[str, Callable[[dict[str, Any]], MirrorRow]] = {
    "Practitioner": transform_practitioner,
    "PractitionerRole": transform_practitioner_role,
    "Patient": transform_patient,
    "Appointment": transform_appointment,
    "Invoice": transform_invoice,
    "Referral": transform_referral,
}
