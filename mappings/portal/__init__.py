"""Portal actions of patients mapped to FHIR R4 resources (pure: no I/O)."""
