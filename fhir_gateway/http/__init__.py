"""The HTTP surface: FHIR REST routes, content negotiation and response shaping."""
