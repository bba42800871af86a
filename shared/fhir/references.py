"""FHIR references: ``Patient/x``, ``/main/Patient/x``, ``https://host/fhir/Patient/x/_history/2``,
or a bare id with ``type``."""
from __future__ import annotations

from shared.fhir.models import Reference


def reference_parts(ref: Reference | None) -> tuple[str, str] | None:
    """(resource type, id) a reference points to; None for contained (#x), searches or no target."""
    if ref is None or not ref.reference:
        return None
    value = ref.reference.strip()
    if value.startswith("#") or "?" in value:
        return None
    parts = [p for p in value.split("/") if p]
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) == 1:
        return (ref.type, parts[0]) if ref.type else None
    return parts[-2], parts[-1]


def parse_reference(ref: Reference | None, resource_type: str) -> str | None:
    """The id ``ref`` points to if it is a ``resource_type``, else None."""
    parts = reference_parts(ref)
    return parts[1] if parts is not None and parts[0] == resource_type else None
