"""FHIR references: ``Patient/x``, ``https://host/fhir/Patient/x/_history/2``, or type + id."""
from __future__ import annotations

from shared.fhir.models import Reference


def parse_reference(ref: Reference | None, resource_type: str) -> str | None:
    """The id ``ref`` points to if it is a ``resource_type``, else None (contained, other types)."""
    if ref is None or not ref.reference:
        return None
    value = ref.reference.strip()
    if value.startswith("#"):
        return None
    parts = [p for p in value.split("?")[0].split("/") if p]
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) == 1 and ref.type == resource_type:
        return parts[0]
    if len(parts) >= 2 and parts[-2] == resource_type:
        return parts[-1]
    return None
