"""The gateway: FHIR R4 REST surface, operations, access decisions, config and CLI."""

__version__ = "0.1.0"
