"""FHIR transformers: real-world variety in, explicit rows out, typed errors for the unmappable."""
from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from shared.fhir.models import Reference
from shared.fhir.references import parse_reference
from shared.fhir.transform import (
    UNKNOWN_UPDATED_AT,
    TransformError,
    UnsupportedResourceType,
    session_numbers,
    transform_resource,
)

UTC = UTC
META = {"versionId": "7", "lastUpdated": "2025-03-04T05:06:07.123+11:00"}


def patient(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "PT-1", "meta": META, **fields}


def appointment(**fields: Any) -> dict[str, Any]:
    base = {"resourceType": "Appointment", "id": "AP-1", "meta": META, "status": "booked",
            "start": "2025-03-10T09:00:00+11:00", "end": "2025-03-10T09:50:00+11:00",
            "participant": [{"actor": {"reference": "Patient/PT-1"}, "status": "accepted"},
                            {"actor": {"reference": "Practitioner/PR-1"}, "status": "accepted"}]}
    base.update(fields)
    return base


def test_meta_becomes_version_and_utc_time() -> None:
    row = transform_resource(patient(name=[{"family": "Nguyen", "given": ["Mai"]}]))
    assert (row.table, row.source_id, row.source_version) == ("clients", "PT-1", "7")
    assert row.source_updated_at == datetime(2025, 3, 3, 18, 6, 7, 123000, tzinfo=UTC)


def test_missing_meta_gets_the_lowest_version_time() -> None:
    row = transform_resource({"resourceType": "Patient", "id": "PT-2"})
    assert row.source_updated_at == UNKNOWN_UPDATED_AT and row.source_version is None


@pytest.mark.parametrize(("names", "given", "family", "initials"), [
    ([{"use": "usual", "given": ["Kit"]}, {"use": "official", "given": ["Katherine", "Anne"], "family": "Lee"}],
     "Katherine Anne", "Lee", "KL"),
    ([{"use": "nickname", "given": ["Bo"]}, {"use": "usual", "given": ["Robert"], "family": "Ng"}], "Robert", "Ng", "RN"),
    ([{"use": "maiden", "family": "Smith", "given": ["Jo"]}, {"use": "old", "family": "Brown"}], "Jo", "Smith", "JS"),
    ([{"use": "official", "family": "Madonna"}], None, "Madonna", "M"),
    ([{"use": "official", "given": ["Cher"]}], "Cher", None, "C"),
    ([{"text": "ada   lovelace"}], None, None, "AL"),
    ([], None, None, None),
    ([{"use": "official", "given": ["  "], "family": " "}], None, None, None),
])
def test_name_choice_and_initials(names: list[dict[str, Any]], given: str | None, family: str | None,
                                  initials: str | None) -> None:
    content = transform_resource(patient(name=names)).content
    assert content["initials"] == initials
    assert content["family_name"] == family
    assert content["given_name"] == given


def test_telecom_prefers_current_preferred_use_then_rank() -> None:
    telecom = [
        {"system": "email", "value": "old@x.example", "use": "old", "rank": 1},
        {"system": "email", "value": "work@x.example", "use": "work", "rank": 1},
        {"system": "email", "value": "home2@x.example", "use": "home", "rank": 2},
        {"system": "email", "value": "home1@x.example", "use": "home", "rank": 1},
        {"system": "phone", "value": "02 9999 0000", "use": "home"},
        {"system": "sms", "value": " 0400 000 000 ", "use": "mobile"},
        {"system": "fax", "value": "02 1111"},
        {"system": "email"},
    ]
    content = transform_resource(patient(telecom=telecom)).content
    assert content["email"] == "home1@x.example"
    assert content["phone"] == "0400 000 000"


def test_patient_birth_date_partial_dates_and_practitioner() -> None:
    full = transform_resource(patient(birthDate="1980-05-17", generalPractitioner=[
        {"reference": "Organization/OR-1"}, {"reference": "https://api.example/main/Practitioner/PR-9"}])).content
    assert full["birth_date"] == date(1980, 5, 17) and full["practitioner_id"] == "PR-9"
    assert transform_resource(patient(birthDate="1980")).content["birth_date"] is None
    with pytest.raises(TransformError, match="Patient/PT-1: birthDate"):
        transform_resource(patient(birthDate="1980-13-45"))


def test_unknown_elements_and_extensions_are_ignored() -> None:
    row = transform_resource(patient(
        extension=[{"url": "http://example.org/x", "valueString": "y"}],
        _birthDate={"extension": []}, contact=[{"name": {"family": "Kin"}}], photo=[{"data": "AAAA"}],
        name=[{"given": ["Zed"], "family": "Ali", "extension": [{"url": "u"}], "period": {"start": "2020"}}],
    ))
    assert row.content["initials"] == "ZA"


def test_appointment_instants_with_offsets_are_stored_in_utc() -> None:
    content = transform_resource(appointment()).content
    assert content["start_at"] == datetime(2025, 3, 9, 22, 0, tzinfo=UTC)
    assert content["end_at"] == datetime(2025, 3, 9, 22, 50, tzinfo=UTC)
    assert (content["client_id"], content["client_ids"], content["practitioner_id"]) == ("PT-1", "PT-1", "PR-1")
    assert content["status"] == "booked" and content["source_status"] == "booked"


def test_participants_without_actor_and_several_patients() -> None:
    content = transform_resource(appointment(participant=[
        {"type": [{"text": "interpreter"}], "status": "accepted"},
        {"actor": {"display": "Room 4"}},
        {"actor": {"reference": "Patient/PT-2"}, "status": "accepted"},
        {"actor": {"reference": "Patient/PT-3"}, "status": "tentative"},
        {"actor": {"reference": "PractitionerRole/RO-5"}},
        {"actor": {"reference": "Location/L-1"}},
    ])).content
    assert content["client_id"] == "PT-2" and content["client_ids"] == "PT-2 PT-3"
    assert content["practitioner_id"] is None and content["practitioner_role_id"] == "RO-5"


def test_appointment_without_any_patient() -> None:
    content = transform_resource(appointment(participant=[{"actor": {"reference": "Practitioner/PR-1"}}])).content
    assert content["client_id"] is None and content["client_ids"] is None


@pytest.mark.parametrize(("source", "mapped"), [
    ("proposed", "pending"), ("pending", "pending"), ("waitlist", "pending"), ("booked", "booked"),
    ("arrived", "arrived"), ("checked-in", "arrived"), ("fulfilled", "attended"),
    ("cancelled", "cancelled"), ("noshow", "no_show"), ("entered-in-error", "error"),
])
def test_every_fhir_appointment_status_is_mapped(source: str, mapped: str) -> None:
    assert transform_resource(appointment(status=source)).content["status"] == mapped


def test_unmapped_status_is_a_typed_error_naming_type_and_id() -> None:
    with pytest.raises(TransformError) as caught:
        transform_resource(appointment(status="postponed"))
    assert (caught.value.resource_type, caught.value.resource_id) == ("Appointment", "AP-1")
    assert "postponed" in str(caught.value)


def test_cancelled_by_the_patient_participant_status() -> None:
    declined = appointment(participant=[{"actor": {"reference": "Patient/PT-1"}, "status": "declined"},
                                        {"actor": {"reference": "Practitioner/PR-1"}, "status": "accepted"}])
    content = transform_resource(declined).content
    assert content["status"] == "cancelled" and content["source_status"] == "booked"


def test_cancelled_by_the_participant_status_modifier_extension() -> None:
    modifier = {"url": "https://fhir.example/StructureDefinition/participant-status", "valueCode": "cancelled"}
    cancelled = appointment(participant=[
        {"actor": {"reference": "Patient/PT-1"}, "status": "accepted", "modifierExtension": [modifier]},
        {"actor": {"reference": "Practitioner/PR-1"}}])
    assert transform_resource(cancelled).content["status"] == "cancelled"
    # Only when every patient is out: a group session with one cancellation still happens.
    group = appointment(participant=[
        {"actor": {"reference": "Patient/PT-1"}, "modifierExtension": [modifier]},
        {"actor": {"reference": "Patient/PT-2"}, "status": "accepted"}])
    assert transform_resource(group).content["status"] == "booked"


def test_invalid_instant_is_a_typed_error_without_the_value() -> None:
    with pytest.raises(TransformError) as caught:
        transform_resource(appointment(start="next tuesday at 9, Jane Citizen"))
    assert "Appointment/AP-1" in str(caught.value) and "start" in str(caught.value)
    assert "Jane" not in str(caught.value)


def test_end_before_start_is_rejected() -> None:
    with pytest.raises(TransformError, match="end is before start"):
        transform_resource(appointment(end="2025-03-10T08:00:00+11:00"))


def test_missing_id_and_missing_resource_type() -> None:
    with pytest.raises(TransformError, match="missing id"):
        transform_resource({"resourceType": "Patient"})
    with pytest.raises(TransformError, match="no resourceType"):
        transform_resource({"id": "x"})


def test_unsupported_type_is_its_own_error() -> None:
    with pytest.raises(UnsupportedResourceType) as caught:
        transform_resource({"resourceType": "Observation", "id": "OB-1"})
    assert caught.value.resource_type == "Observation" and caught.value.resource_id == "OB-1"


def test_practitioner_and_role() -> None:
    prac = transform_resource({
        "resourceType": "Practitioner", "id": "PR-1", "meta": META, "active": True,
        "name": [{"use": "official", "prefix": ["Dr"], "given": ["Ana"], "family": "Costa"}],
        "telecom": [{"system": "email", "value": "home@x", "use": "home"}, {"system": "email", "value": "w@x", "use": "work"}],
    })
    assert prac.table == "practitioners"
    assert prac.content["display_name"] == "Dr Ana Costa" and prac.content["email"] == "w@x"
    role = transform_resource({
        "resourceType": "PractitionerRole", "id": "RO-1", "meta": META, "active": True,
        "practitioner": {"reference": "Practitioner/PR-1"}, "organization": {"reference": "Organization/OR-1"},
        "code": [{"coding": [{"system": "http://snomed.info/sct", "code": "59944000", "display": "Psychologist"}]}],
    })
    assert role.table == "practitioner_roles"
    assert (role.content["practitioner_id"], role.content["organization_id"], role.content["role_code"],
            role.content["role_display"]) == ("PR-1", "OR-1", "59944000", "Psychologist")


def test_invoice_money_status_and_date_only_issue_date() -> None:
    row = transform_resource({
        "resourceType": "Invoice", "id": "IN-1", "meta": META, "status": "balanced", "date": "2025-03-10",
        "subject": {"reference": "Patient/PT-1"},
        "participant": [{"actor": {"reference": "PractitionerRole/RO-1"}}],
        "totalNet": {"value": 180, "currency": "AUD"}, "totalGross": {"value": 198.005, "currency": "AUD"},
    })
    assert row.table == "invoices"
    c = row.content
    assert (c["status"], c["source_status"], c["client_id"], c["practitioner_role_id"]) == ("paid", "balanced", "PT-1", "RO-1")
    assert c["issued_at"] == datetime(2025, 3, 10, tzinfo=UTC)
    assert c["total_net"] == Decimal("180.00") and c["total_gross"] == Decimal("198.00") and c["currency"] == "AUD"
    with pytest.raises(TransformError, match="Invoice/IN-2: unmapped status"):
        transform_resource({"resourceType": "Invoice", "id": "IN-2", "status": "paid"})


@pytest.mark.parametrize(("reference", "kind", "expected"), [
    ("Patient/PT-1", "Patient", "PT-1"),
    ("https://au-api.halaxy.com/main/Patient/PT-1", "Patient", "PT-1"),
    ("https://au-api.halaxy.com/main/Patient/PT-1/_history/4", "Patient", "PT-1"),
    ("PractitionerRole/RO-2", "PractitionerRole", "RO-2"),
    ("PractitionerRole/RO-2", "Practitioner", None),
    ("#contained-1", "Patient", None),
    ("", "Patient", None),
    ("Patient?identifier=x", "Patient", None),
])
def test_references(reference: str, kind: str, expected: str | None) -> None:
    assert parse_reference(Reference(reference=reference), kind) == expected


def test_reference_by_type_and_bare_id() -> None:
    assert parse_reference(Reference(reference="PT-1", type="Patient"), "Patient") == "PT-1"
    assert parse_reference(None, "Patient") is None


def test_session_numbers_count_held_and_booked_sessions_in_order() -> None:
    t = lambda d: datetime(2025, 1, d, tzinfo=UTC)
    numbers = session_numbers([
        ("AP-3", t(3), "attended"), ("AP-1", t(1), "attended"), ("AP-2", t(2), "cancelled"),
        ("AP-4", t(4), "no_show"), ("AP-5", t(5), "booked"), ("AP-0", None, "pending"), ("AP-6", t(5), "arrived"),
    ])
    assert numbers == {"AP-1": 1, "AP-3": 2, "AP-5": 3, "AP-6": 4}


HALAXY_STATUS = "https://fhir.example/StructureDefinition/appointment-participant-status"


def halaxy_appointment(*codes: str, status: str = "booked") -> dict[str, Any]:
    patients = [{"actor": {"reference": f"/main/Patient/PT-{n}", "type": "Patient"},
                 "extension": [{"url": HALAXY_STATUS, "valueCode": code}]} for n, code in enumerate(codes)]
    return appointment(status=status, participant=[
        *patients, {"actor": {"reference": "/main/PractitionerRole/PR-1650721", "type": "PractitionerRole"}}])


@pytest.mark.parametrize(("code", "mapped"), [
    ("booked", "booked"), ("confirmed", "booked"), ("arrived", "arrived"), ("attended", "attended"),
    ("cancelled", "cancelled"), ("rejected", "cancelled"), ("did-not-attend", "no_show"), ("Did Not Attend", "no_show"),
])
def test_halaxy_attendance_extension_decides_the_status(code: str, mapped: str) -> None:
    content = transform_resource(halaxy_appointment(code)).content
    assert content["status"] == mapped and content["source_status"] == "booked"
    assert content["practitioner_role_id"] == "PR-1650721" and content["client_id"] == "PT-0"


def test_halaxy_group_session_takes_the_most_held_attendance() -> None:
    assert transform_resource(halaxy_appointment("cancelled", "attended")).content["status"] == "attended"
    assert transform_resource(halaxy_appointment("did-not-attend", "cancelled")).content["status"] == "no_show"
    # An appointment cancelled as a whole stays cancelled whatever a client's status says.
    assert transform_resource(halaxy_appointment("attended", status="cancelled")).content["status"] == "cancelled"


def test_unknown_attendance_code_is_a_typed_error() -> None:
    with pytest.raises(TransformError, match="Appointment/AP-1: unmapped participant status 'teleported'"):
        transform_resource(halaxy_appointment("teleported"))


def test_halaxy_invoice_shape() -> None:
    base = {"resourceType": "Invoice", "id": "IN-9", "meta": META, "date": "2025-03-10", "type": "invoice",
            "title": "Zebedee Client", "recipient": [{"reference": "/main/Patient/PT-4", "type": "Patient"}],
            "practitioner": [{"reference": "/main/PractitionerRole/PR-1650721", "type": "PractitionerRole"}],
            "totalGross": {"value": 220, "currency": "AUD"}, "totalNet": 200, "totalPaid": 220, "totalBalance": 0}
    paid = transform_resource({**base, "status": "active"}).content
    assert (paid["status"], paid["source_status"], paid["client_id"], paid["practitioner_role_id"]) == (
        "paid", "active", "PT-4", "PR-1650721")
    assert (paid["total_gross"], paid["total_net"], paid["total_paid"], paid["total_balance"], paid["currency"]) == (
        Decimal("220.00"), Decimal("200.00"), Decimal("220.00"), Decimal("0.00"), "AUD")
    assert "Zebedee" not in repr(paid)  # Halaxy's title is the client's name: never stored
    owing = transform_resource({**base, "status": "active", "totalPaid": 0, "totalBalance": 220}).content
    assert owing["status"] == "issued"
    assert transform_resource({**base, "status": "write-off"}).content["status"] == "written_off"
    single = transform_resource({**base, "status": "issued", "recipient": {"reference": "Patient/PT-5"}}).content
    assert single["client_id"] == "PT-5"


def test_synthetic_data_maps_without_errors() -> None:
    from devtools.synthetic import SyntheticCounts, generate

    rows = [transform_resource(r) for r in generate(SyntheticCounts(3, 30, 200, 60), seed=4)]
    sessions = [r for r in rows if r.table == "sessions"]
    assert {r.content["status"] for r in sessions} >= {"attended", "booked", "cancelled"}
    assert all(r.content["practitioner_role_id"] and not r.content["practitioner_id"] for r in sessions)
    assert {r.content["status"] for r in rows if r.table == "invoices"} >= {"paid", "issued"}


def referral(*extension: dict[str, Any], **fields: Any) -> dict[str, Any]:
    base = {"resourceType": "Referral", "id": "RF-1", "meta": META,
            "subject": {"reference": "/main/Patient/PT-9", "type": "Patient"},
            "performer": {"reference": "/main/Practitioner/PR-3", "type": "Practitioner"},
            "period": {"start": "2026-01-05", "end": "2027-01-04"},
            "referralDefinition": " Mental Health Treatment Plan ", "priority": True,
            "extension": list(extension) or [
                {"url": "https://x.example/StructureDefinition/referral-appointment-limit", "valueInteger": 10},
                {"url": "https://x.example/StructureDefinition/referral-prior-appointments", "valueInteger": 2}]}
    return {**base, **fields}


def test_a_halaxy_referral_becomes_a_care_plan_row() -> None:
    row = transform_resource(referral())
    assert row.table == "referrals" and row.source_id == "RF-1"
    assert row.content == {
        "client_id": "PT-9", "practitioner_id": "PR-3", "status": "active", "name": "Mental Health Treatment Plan",
        "starts_on": date(2026, 1, 5), "ends_on": date(2027, 1, 4), "session_limit": 10, "prior_sessions": 2,
        "preferred": True}


def test_referral_variants_map_to_what_they_mean() -> None:
    # No performer: any practitioner of the practice may use it; a dateTime period keeps its date;
    # FHIR's request priority is a code, not Halaxy's "preferred" flag; ``patient`` names the client.
    row = transform_resource(referral(performer=None, subject=None, priority="routine",
                                      patient={"reference": "Patient/PT-7"},
                                      period={"start": "2026-01-05T09:00:00+11:00"}))
    assert (row.content["client_id"], row.content["practitioner_id"], row.content["preferred"]) == ("PT-7", None, None)
    assert (row.content["starts_on"], row.content["ends_on"]) == (date(2026, 1, 5), None)
    # A limit in hours or dollars is not a number of sessions; a limit type saying so wins too.
    hours = transform_resource(referral({"url": "https://x/referral-limit", "valueQuantity": {"value": 6, "unit": "h"}}))
    assert hours.content["session_limit"] is None and hours.content["prior_sessions"] == 0
    typed = transform_resource(referral({"url": "https://x/referral-limit", "valueInteger": 500},
                                        {"url": "https://x/referral-limit-type", "valueCode": "money"}))
    assert typed.content["session_limit"] is None
    counted = transform_resource(referral({"url": "https://x/referral-limit", "valueQuantity": {"value": 12,
                                                                                               "unit": "appointments"}}))
    assert counted.content["session_limit"] == 12
    assert transform_resource(referral(status="revoked")).content["status"] == "revoked"
    assert transform_resource(referral(extension=[])).content["session_limit"] is None


@pytest.mark.parametrize("fields, reason", [
    ({"period": {"start": "2026-02-01", "end": "2026-01-01"}}, "period ends before it starts"),
    ({"period": {"start": "2026-13-01"}}, "period.start is not a FHIR date"),
    ({"status": "sideways"}, "unmapped status 'sideways'"),
    ({"extension": [{"url": "https://x/referral-limit", "valueInteger": -1}]}, "whole number"),
    ({"extension": [{"url": "https://x/referral-limit", "valueDecimal": 2.5}]}, "whole number"),
    ({"extension": [{"url": "https://x/referral-prior-appointments", "valueString": "ten"}]}, "not a number"),
])
def test_an_unmappable_referral_names_itself_not_its_content(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(TransformError) as caught:
        transform_resource(referral(**fields))
    assert caught.value.resource_type == "Referral" and caught.value.resource_id == "RF-1"
    assert reason in str(caught.value) and "PT-9" not in str(caught.value)
