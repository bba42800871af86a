"""From answers to rows: records found where the spec says (or a ShapeError naming the path),
ids as text, versions from updated-at or the observation time, and each named conversion."""
from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shared.rest.convert import convert
from shared.rest.load import load_spec, spec_path
from shared.rest.mapping import EntityMapper, RecordError, ShapeError, extract_records, source_id
from shared.rest.spec import ColumnMap

SYDNEY = ZoneInfo("Australia/Sydney")
SEEN = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def mapper(source: str, entity: str) -> EntityMapper:
    spec = load_spec(spec_path(source, None))
    e = spec.entity(entity)
    return EntityMapper(e, SYDNEY, declared=not isinstance(e.table, str))


def test_records_are_found_at_the_first_path_that_exists() -> None:
    assert extract_records({"facilities": [{"id": 1}]}, ["facilities", "$"]) == [{"id": 1}]
    assert extract_records([{"id": 2}], ["facilities", "$"]) == [{"id": 2}]
    assert extract_records({"_embedded": {"list": []}}, ["_embedded.list"]) == []


@pytest.mark.parametrize(("body", "records", "path", "message"), [
    ({"_embedded": {}}, "_embedded.vwApiCurrentPremiseList", "_embedded.vwApiCurrentPremiseList",
     "no records at '_embedded.vwApiCurrentPremiseList'"),
    ({"data": {"id": 1}}, "data", "data", "the records at 'data' are not a list"),
    ({"data": [{"id": 1}, 7]}, "data", "data.1", "record 1 at 'data' is not an object"),
    ("<html>", "data", "data", "no records at 'data'"),
])
def test_an_unexpected_shape_names_the_missing_path(body: Any, records: str, path: str, message: str) -> None:
    with pytest.raises(ShapeError) as caught:
        extract_records(body, [records])
    assert caught.value.path == path and message in str(caught.value)


@pytest.mark.parametrize(("record", "expected"), [
    ({"id": 12}, "12"), ({"id": 1234567890123456789012}, "1234567890123456789012"), ({"id": " abc "}, "abc")])
def test_ids_become_text(record: dict[str, Any], expected: str) -> None:
    assert source_id(record, "id") == expected


@pytest.mark.parametrize("record", [{}, {"id": None}, {"id": True}, {"id": ""}, {"id": "x" * 65}, {"id": 1.5}])
def test_a_record_without_a_usable_id_is_a_record_error(record: dict[str, Any]) -> None:
    with pytest.raises(RecordError, match="id at 'id'"):
        source_id(record, "id")


def test_a_cliniko_appointment_fills_a_session() -> None:
    record = {"id": 901, "updated_at": "2026-12-01T10:00:00Z", "starts_at": "2026-12-02T09:00:00+11:00",
              "ends_at": "2026-12-02T09:50:00+11:00", "did_not_arrive": True, "cancelled_at": None,
              "practitioner": {"links": {"self": "https://api.au1.cliniko.com/v1/practitioners/77"}},
              "patient": {"links": {"self": "https://api.au1.cliniko.com/v1/patients/55"}},
              "appointment_type_name": "Initial consult"}
    row = mapper("cliniko", "appointments").row(record, SEEN)
    assert (row.table, row.source_id, row.source_updated_at) == ("sessions", "901", datetime(2026, 12, 1, 10, tzinfo=UTC))
    assert row.content == {"practitioner_id": "77", "client_id": "55", "client_ids": "55",
                           "start_at": datetime(2026, 12, 1, 22, tzinfo=UTC), "end_at": datetime(2026, 12, 1, 22, 50, tzinfo=UTC),
                           "service": "Initial consult", "status": "no_show", "source_status": "did_not_arrive"}


def test_a_cliniko_invoice_and_patient() -> None:
    invoice = {"id": "5", "updated_at": "2026-12-01T10:00:00Z", "status_description": "Open", "issue_date": "2026-12-01",
               "net_amount": "100.00", "total_amount": "110.00", "outstanding_amount": "10.00", "currency": "AUD",
               "patient": {"links": {"self": "/v1/patients/55"}}, "practitioner": {"links": {"self": "/v1/practitioners/7"}}}
    row = mapper("cliniko", "invoices").row(invoice, SEEN)
    assert row.content["status"] == "issued" and row.content["total_paid"] == Decimal("100.00")
    assert row.content["issued_at"] == datetime(2026, 11, 30, 13, tzinfo=UTC)  # midnight in Sydney
    patient = {"id": 55, "updated_at": "2026-12-01T10:00:00Z", "first_name": "Ada", "last_name": "Lovelace",
               "date_of_birth": "1990-05-01", "sex": "Female", "patient_phone_numbers": [{"number": "0400"}],
               "archived_at": "2026-11-01T00:00:00Z"}
    content = mapper("cliniko", "patients").row(patient, SEEN).content
    assert (content["initials"], content["birth_date"], content["gender"], content["phone"], content["active"]) == (
        "AL", date(1990, 5, 1), "female", "0400", False)


def test_a_declared_table_keeps_the_whole_record_and_a_source_without_updated_at_is_versioned_when_seen() -> None:
    premise = {"premiseid": 4021, "premisename": "Mji Pharmacy", "licenseno": "PPB/1", "licenseexpiry": "2027-06-30",
               "extra": {"not": "declared"}}
    row = mapper("ppb-premises", "premises").row(premise, SEEN)
    assert (row.table, row.source_id, row.source_updated_at) == ("premises", "4021", SEEN)
    assert json.loads(row.content["record"]) == premise
    assert row.content["license_expiry"] == date(2027, 6, 30)


def test_the_hie_time_format_is_read_in_its_zone() -> None:
    facility = {"id": "f-1", "facilityCode": "10001", "lastUpdated": "2026-11-30 08:15:00", "kephLevel": "3",
                "operationalStatus": "Non-Operational", "latitude": -1.28}
    row = mapper("hie-facilities", "facilities").row(facility, SEEN)
    assert row.source_updated_at == datetime(2026, 11, 30, 8, 15, tzinfo=UTC)
    assert (row.content["keph_level"], row.content["operational"], row.content["latitude"]) == (3, False, Decimal("-1.28"))


def test_a_bad_value_is_a_record_error_naming_the_column_not_the_value() -> None:
    with pytest.raises(RecordError) as caught:
        mapper("hie-facilities", "facilities").row({"id": "f", "kephLevel": "level three secret"}, SEEN)
    assert "keph_level" in str(caught.value) and "secret" not in str(caught.value)
    with pytest.raises(RecordError, match="updated_at at 'lastUpdated'"):
        mapper("hie-facilities", "facilities").row({"id": "f", "lastUpdated": "yesterday"}, SEEN)


@pytest.mark.parametrize(("column", "value", "expected"), [
    (ColumnMap(field="v", type="string"), 12, "12"),
    (ColumnMap(field="v", type="string"), True, "true"),
    (ColumnMap(field="v", type="integer"), "42", 42),
    (ColumnMap(field="v", type="integer"), 42.0, 42),
    (ColumnMap(field="v", type="decimal"), 0.1, Decimal("0.1")),
    (ColumnMap(field="v", type="date"), "2026-12-03T10:00:00Z", date(2026, 12, 3)),
    (ColumnMap(field="v", type="date", format="%d/%m/%Y"), "03/12/2026", date(2026, 12, 3)),
    (ColumnMap(field="v", type="datetime"), "2026-12-03T10:00:00+03:00", datetime(2026, 12, 3, 7, tzinfo=UTC)),
    (ColumnMap(field="v", type="datetime", zone="Africa/Nairobi"), "2026-12-03T10:00:00", datetime(2026, 12, 3, 7, tzinfo=UTC)),
    (ColumnMap(field="v", type="datetime", zone="tenant"), "2026-12-03T10:00:00", datetime(2026, 12, 2, 23, tzinfo=UTC)),
    (ColumnMap(field="v", type="boolean"), "Yes", True),
    (ColumnMap(field="v", type="boolean"), 0, False),
    (ColumnMap(field="v", type="enum", values={"A": "active"}, default="other"), "B", "other"),
    (ColumnMap(field="v", type="link-id"), "https://x/v1/items/9/", "9"),
    (ColumnMap(field="v", type="json"), {"b": 1, "a": [2]}, '{"a":[2],"b":1}'),
    (ColumnMap(field="v", type="integer"), None, None),
    (ColumnMap(fields=["a", "b"], type="initials"), None, None),
])
def test_named_conversions(column: ColumnMap, value: Any, expected: Any) -> None:
    assert convert("c", column, {"v": value}, SYDNEY) == expected


@pytest.mark.parametrize(("column", "value"), [
    (ColumnMap(field="v", type="integer"), True), (ColumnMap(field="v", type="integer"), 1.5),
    (ColumnMap(field="v", type="decimal"), "NaN"), (ColumnMap(field="v", type="boolean"), "maybe"),
    (ColumnMap(field="v", type="string"), {"a": 1}), (ColumnMap(field="v", type="date"), 20261203),
])
def test_conversions_refuse_what_they_cannot_read(column: ColumnMap, value: Any) -> None:
    with pytest.raises(ValueError, match="column c"):
        convert("c", column, {"v": value}, SYDNEY)
