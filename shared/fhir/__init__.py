"""FHIR R4: thin models of the elements we read, and pure transformers from resources to rows."""
