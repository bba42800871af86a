"""Thin pydantic models of the FHIR R4 elements the mirror reads; everything else is ignored.

fhir.resources validates every element of the spec and is ~20x slower on the ingest path;
these models read only what the transformers map and tolerate the variety of real exports.
"""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Element(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Meta(Element):
    versionId: str | None = None
    lastUpdated: datetime | None = None


class Coding(Element):
    system: str | None = None
    code: str | None = None
    display: str | None = None


class CodeableConcept(Element):
    coding: list[Coding] = Field(default_factory=list)
    text: str | None = None

    def label(self) -> str | None:
        return self.text or next((c.display or c.code for c in self.coding if c.display or c.code), None)


class Quantity(Element):
    value: Decimal | None = None
    unit: str | None = None
    code: str | None = None


class Extension(Element):
    url: str = ""
    valueCode: str | None = None
    valueInteger: int | None = None
    valueDecimal: Decimal | None = None
    valueQuantity: Quantity | None = None
    valueString: str | None = None
    valueCoding: Coding | None = None
    valueCodeableConcept: CodeableConcept | None = None

    def code(self) -> str | None:
        if self.valueCode or self.valueString:
            return self.valueCode or self.valueString
        if self.valueCoding:
            return self.valueCoding.code
        if self.valueCodeableConcept and self.valueCodeableConcept.coding:
            return self.valueCodeableConcept.coding[0].code
        return None


class Reference(Element):
    reference: str | None = None
    type: str | None = None
    display: str | None = None


class HumanName(Element):
    use: str | None = None
    text: str | None = None
    family: str | None = None
    given: list[str] = Field(default_factory=list)
    prefix: list[str] = Field(default_factory=list)


class ContactPoint(Element):
    system: str | None = None
    value: str | None = None
    use: str | None = None
    rank: int | None = None


class Money(Element):
    value: Decimal | None = None
    currency: str | None = None


class Resource(Element):
    resourceType: str
    id: str | None = None
    meta: Meta = Field(default_factory=Meta)


class Practitioner(Resource):
    active: bool | None = None
    name: list[HumanName] = Field(default_factory=list)
    telecom: list[ContactPoint] = Field(default_factory=list)


class PractitionerRole(Resource):
    active: bool | None = None
    practitioner: Reference | None = None
    organization: Reference | None = None
    code: list[CodeableConcept] = Field(default_factory=list)


class Patient(Resource):
    active: bool | None = None
    name: list[HumanName] = Field(default_factory=list)
    telecom: list[ContactPoint] = Field(default_factory=list)
    gender: str | None = None
    # FHIR allows partial dates (1980, 1980-05): kept as text and parsed by the transformer.
    birthDate: str | None = None
    generalPractitioner: list[Reference] = Field(default_factory=list)


class AppointmentParticipant(Element):
    actor: Reference | None = None
    status: str | None = None
    # Halaxy puts the client's attendance in an appointment-participant-status extension.
    extension: list[Extension] = Field(default_factory=list)
    modifierExtension: list[Extension] = Field(default_factory=list)


class Appointment(Resource):
    status: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    serviceType: list[CodeableConcept] = Field(default_factory=list)
    appointmentType: CodeableConcept | None = None
    participant: list[AppointmentParticipant] = Field(default_factory=list)
    modifierExtension: list[Extension] = Field(default_factory=list)


class InvoiceParticipant(Element):
    actor: Reference | None = None


class Invoice(Resource):
    """R4 Invoice, plus Halaxy's shape: ``practitioner`` (PractitionerRole references), a list
    ``recipient``, amounts as Money or plain numbers, ``totalPaid`` / ``totalBalance``. Halaxy's
    ``title`` (the client's name) is deliberately not read."""

    status: str | None = None
    subject: Reference | None = None
    recipient: list[Reference] = Field(default_factory=list)
    date: datetime | None = None
    participant: list[InvoiceParticipant] = Field(default_factory=list)
    practitioner: list[Reference] = Field(default_factory=list)
    issuer: Reference | None = None
    totalNet: Money | None = None
    totalGross: Money | None = None
    totalPaid: Money | None = None
    totalBalance: Money | None = None

    @field_validator("recipient", "practitioner", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @field_validator("totalNet", "totalGross", "totalPaid", "totalBalance", mode="before")
    @classmethod
    def _number_or_money(cls, value: Any) -> Any:
        return {"value": value} if isinstance(value, (int, float, str)) else value


class Period(Element):
    start: str | None = None  # a date or a dateTime: the transformer keeps the date
    end: str | None = None


class Referral(Resource):
    """Halaxy's Referral (``/main/Referral``): the practice's record of a referral (in Australia
    often a GP's Mental Health Treatment Plan) with its validity period, the practitioner it is
    assigned to and an appointment limit. Published fields: ``period``, ``performer``
    (Practitioner), ``requester``, ``coverage``, ``referralDefinition`` (the referral type's
    name), ``created``, ``priority`` (the patient's preferred referral). The patient and the limit
    are read from ``subject``/``patient`` and from extensions (docs/referrals.md)."""

    status: str | None = None
    subject: Reference | None = None
    patient: Reference | None = None
    performer: Reference | None = None
    period: Period | None = None
    referralDefinition: str | None = None
    priority: bool | None = None
    extension: list[Extension] = Field(default_factory=list)

    @field_validator("performer", mode="before")
    @classmethod
    def _first_performer(cls, value: Any) -> Any:
        # FHIR's ServiceRequest has a list of performers; Halaxy documents one.
        return value[0] if isinstance(value, list) and value else (None if value == [] else value)

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Any:
        # FHIR's request priority is a code (routine, urgent…): not the "preferred" flag.
        return value if isinstance(value, bool) or value is None else None


MODELS: dict[str, type[Resource]] = {
    m.__name__: m for m in (Practitioner, PractitionerRole, Patient, Appointment, Invoice, Referral)
}


def model_for(resource: dict[str, Any]) -> type[Resource] | None:
    return MODELS.get(resource.get("resourceType", ""))
