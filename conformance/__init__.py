"""A client-side FHIR R4 / SMART conformance runner that speaks only HTTP.

It imports nothing from the gateway's server packages: point it at any FHIR base
(`python -m conformance --base URL`) and it reports what the server really does.
"""

__all__ = ["cli", "runner"]
