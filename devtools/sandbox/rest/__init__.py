"""Sandboxes for the REST sources: the HIE facility registry, the PPB premise catalogue, Cliniko
and PEMS, each shaped like the real API (docs/sources.md, "REST sandboxes")."""
