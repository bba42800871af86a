"""Backfill from FHIR exports: streaming readers for Bundles and NDJSON, and the load pipeline."""
