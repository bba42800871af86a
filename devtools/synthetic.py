"""Deterministic synthetic FHIR R4 data shaped like Halaxy's: for samples, benchmarks and tests.

Same seed, same counts and same anchor: the same resources, byte for byte. Plain dicts and
integer arithmetic keep 100,000 resources to a couple of seconds.

Shaped after Halaxy's published API reference: PractitionerRole ids share the ``PR-`` prefix,
appointments and invoices name the practitioner only through a PractitionerRole, references
look like ``/main/Patient/123`` with a ``type``, the client's attendance is an
``appointment-participant-status`` extension, invoices carry ``practitioner``, ``recipient``,
``totalPaid`` and ``totalBalance`` and a status of ``active``/``issued``/``write-off``; referrals
(``/main/Referral``) have a ``period``, a ``performer`` and an appointment limit (docs/referrals.md).
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

GIVEN = ("Olivia", "Jack", "Charlotte", "Noah", "Amelia", "William", "Isla", "Oliver", "Mia", "Leo",
         "Ava", "Henry", "Grace", "Lucas", "Chloe", "Thomas", "Zoe", "James", "Ruby", "Ethan",
         "Mei", "Arjun", "Sofia", "Kai", "Priya", "Mateo", "Aisha", "Finn", "Hana", "Liam")
FAMILY = ("Smith", "Nguyen", "Williams", "Brown", "Wilson", "Taylor", "Johnson", "White", "Martin",
          "Anderson", "Thompson", "Tran", "Walker", "Harris", "Lee", "Ryan", "Robinson", "Kelly",
          "King", "Davis", "O'Brien", "Patel", "Singh", "Chen", "Murphy", "Campbell", "Costa")
SERVICES = ("Psychology consultation", "Initial assessment", "Telehealth consultation",
            "Couples therapy", "Review session")


@dataclass(frozen=True)
class SyntheticCounts:
    practitioners: int = 5
    patients: int = 50
    appointments: int = 200
    invoices: int = 100
    # One referral for every other patient unless given.
    referrals: int | None = None

    @property
    def referral_count(self) -> int:
        return self.patients // 2 if self.referrals is None else self.referrals


def practitioner_id(n: int) -> str:
    return f"PR-{1_000_000 + n}"


def role_id(n: int) -> str:
    return f"PR-{1_500_000 + n}"  # Halaxy: roles and practitioners share the prefix


# The extension's URL as this generator writes it; the transformer matches on the
# "participant-status" suffix, so the exact base does not matter.
PARTICIPANT_STATUS_URL = "https://fhir.halaxy.example/StructureDefinition/appointment-participant-status"
# The transformer matches referral extensions on "limit" / "prior" in the URL's last segment.
REFERRAL_LIMIT_URL = "https://fhir.halaxy.example/StructureDefinition/referral-appointment-limit"
REFERRAL_PRIOR_URL = "https://fhir.halaxy.example/StructureDefinition/referral-prior-appointments"
REFERRAL_TYPES = ("Mental Health Treatment Plan", "Chronic Disease Management Plan", "Eating Disorder Plan")


def ref(resource_type: str, resource_id: str) -> dict[str, str]:
    return {"reference": f"/main/{resource_type}/{resource_id}", "type": resource_type}


def patient_id(n: int) -> str:
    return f"PT-{2_000_000 + n}"


def appointment_id(n: int) -> str:
    return f"AP-{3_000_000 + n}"


def invoice_id(n: int) -> str:
    return f"IN-{4_000_000 + n}"


def referral_id(n: int) -> str:
    return f"RF-{5_000_000 + n}"


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _meta(rng: random.Random, anchor: datetime) -> dict[str, Any]:
    updated = anchor - timedelta(seconds=rng.randrange(1, 90 * 86400))
    return {"versionId": str(rng.randrange(1, 6)), "lastUpdated": _instant(updated)}


def _name(rng: random.Random) -> tuple[str, str]:
    return rng.choice(GIVEN), rng.choice(FAMILY)


def generate(counts: SyntheticCounts, *, seed: int = 1, anchor: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Practitioners and roles, then patients, appointments, invoices and referrals, in that order."""
    anchor = anchor or datetime(2026, 1, 15, tzinfo=UTC)
    rng = random.Random(seed)
    yield from _practitioners(rng, counts, anchor)
    yield from _patients(rng, counts, anchor)
    yield from _appointments(rng, counts, anchor)
    yield from _invoices(rng, counts, anchor)
    yield from _referrals(rng, counts, anchor)


def _practitioners(rng: random.Random, counts: SyntheticCounts, anchor: datetime) -> Iterator[dict[str, Any]]:
    for n in range(counts.practitioners):
        given, family = _name(rng)
        yield {
            "resourceType": "Practitioner", "id": practitioner_id(n), "meta": _meta(rng, anchor),
            "active": True,
            "name": [{"use": "official", "family": family, "given": [given], "prefix": ["Dr"]}],
            "telecom": [{"system": "email", "value": f"{given}.{family}@clinic.example".lower(), "use": "work"},
                        {"system": "phone", "value": f"02 9{rng.randrange(10**7):07d}", "use": "work"}],
        }
        yield {
            "resourceType": "PractitionerRole", "id": role_id(n), "meta": _meta(rng, anchor), "active": True,
            "practitioner": ref("Practitioner", practitioner_id(n)),
            "organization": ref("Organization", "CL-100001"),
            "code": [{"coding": [{"system": "http://snomed.info/sct", "code": "59944000",
                                  "display": "Psychologist"}]}],
        }


def _patients(rng: random.Random, counts: SyntheticCounts, anchor: datetime) -> Iterator[dict[str, Any]]:
    for n in range(counts.patients):
        given, family = _name(rng)
        names: list[dict[str, Any]] = [{"use": "official", "family": family, "given": [given]}]
        if n % 7 == 0:  # a preferred name listed first: the official one must still win
            names.insert(0, {"use": "usual", "given": [rng.choice(GIVEN)]})
        telecom = [{"system": "phone", "value": f"04{rng.randrange(10**8):08d}", "use": "mobile"},
                   {"system": "email", "value": f"{given}{n}@mail.example".lower(), "use": "home"}]
        if n % 5 == 0:
            telecom.append({"system": "email", "value": f"old{n}@mail.example", "use": "old"})
        birth = datetime(1950, 1, 1) + timedelta(days=rng.randrange(0, 60 * 365))
        yield {
            "resourceType": "Patient", "id": patient_id(n), "meta": _meta(rng, anchor), "active": True,
            "name": names, "telecom": telecom, "gender": rng.choice(("female", "male", "other")),
            "birthDate": birth.date().isoformat(),
            "generalPractitioner": [ref("Practitioner", practitioner_id(n % max(counts.practitioners, 1)))],
        }


def _appointments(rng: random.Random, counts: SyntheticCounts, anchor: datetime) -> Iterator[dict[str, Any]]:
    day0 = anchor.replace(hour=0, minute=0, second=0, microsecond=0)
    for n in range(counts.appointments):
        # Recurring clients: each patient sees one practitioner, most of them many times.
        patient = rng.randrange(max(counts.patients, 1))
        prac = patient % max(counts.practitioners, 1)
        start = day0 + timedelta(days=rng.randrange(-120, 60), hours=rng.randrange(8, 18) - 10,
                                 minutes=rng.choice((0, 30)))
        future = start > anchor
        attendance = (rng.choices(("booked", "confirmed", "cancelled"), (70, 25, 5))[0] if future
                      else rng.choices(("attended", "cancelled", "did-not-attend"), (85, 12, 3))[0])
        participants = [
            {"actor": ref("Patient", patient_id(patient)), "status": "accepted",
             "extension": [{"url": PARTICIPANT_STATUS_URL, "valueCode": attendance}]},
            {"actor": ref("PractitionerRole", role_id(prac)), "status": "accepted",
             "type": [{"coding": [{"code": "ATND"}]}]},
        ]
        yield {
            "resourceType": "Appointment", "id": appointment_id(n), "meta": _meta(rng, anchor),
            "status": "cancelled" if attendance == "cancelled" else "booked",
            "start": _instant(start), "end": _instant(start + timedelta(minutes=50)), "minutesDuration": 50,
            "serviceType": [{"text": rng.choice(SERVICES)}], "participant": participants,
        }


def _invoices(rng: random.Random, counts: SyntheticCounts, anchor: datetime) -> Iterator[dict[str, Any]]:
    for n in range(counts.invoices):
        patient = rng.randrange(max(counts.patients, 1))
        prac = patient % max(counts.practitioners, 1)
        issued = anchor - timedelta(days=rng.randrange(0, 120))
        fee = float(rng.choice(("180.00", "220.00", "250.00", "145.50")))
        status = rng.choices(("active", "issued", "write-off"), (80, 17, 3))[0]
        paid = fee if status == "active" and rng.random() < 0.85 else 0.0
        yield {
            "resourceType": "Invoice", "id": invoice_id(n), "meta": _meta(rng, anchor),
            "status": status, "type": "invoice", "payorType": "patient",
            "recipient": [ref("Patient", patient_id(patient))],
            "practitioner": [ref("PractitionerRole", role_id(prac))],
            "date": issued.date().isoformat(),
            "totalNet": {"value": fee, "currency": "AUD"}, "totalGross": {"value": fee, "currency": "AUD"},
            "totalPaid": {"value": paid, "currency": "AUD"},
            "totalBalance": {"value": round(fee - paid, 2), "currency": "AUD"},
        }


def _referrals(rng: random.Random, counts: SyntheticCounts, anchor: datetime) -> Iterator[dict[str, Any]]:
    for n in range(counts.referral_count):
        patient = n * 2 % max(counts.patients, 1)
        starts = anchor.date() - timedelta(days=rng.randrange(0, 200))
        resource: dict[str, Any] = {
            "resourceType": "Referral", "id": referral_id(n), "meta": _meta(rng, anchor),
            "subject": ref("Patient", patient_id(patient)),
            "coverage": ref("Coverage", f"CV-{6_000_000 + patient}"),
            "requester": ref("PractitionerRole", f"EP-{7_000_000 + rng.randrange(50)}"),
            "period": {"start": starts.isoformat(), "end": (starts + timedelta(days=365)).isoformat()},
            "referralDefinition": rng.choice(REFERRAL_TYPES),
            "priority": n % 5 != 0,
            "extension": [{"url": REFERRAL_LIMIT_URL, "valueInteger": rng.choice((6, 10, 10, 20))},
                          {"url": REFERRAL_PRIOR_URL, "valueInteger": rng.choice((0, 0, 0, 1, 2))}],
        }
        if n % 4:  # most referrals are assigned to the practitioner the patient sees
            resource["performer"] = ref("Practitioner", practitioner_id(patient % max(counts.practitioners, 1)))
        yield resource
