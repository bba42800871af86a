"""Source access: tokens, retries, circuit breaker and the FHIR client (FHIR R4 first)."""
