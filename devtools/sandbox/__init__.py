"""A Halaxy-like FHIR R4 source on loopback: for tests, benchmarks and running without credentials."""
