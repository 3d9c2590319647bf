"""Typed errors raised by adapters and operations.

Each error carries the FHIR issue code and, where known, the FHIRPath `expression` of the element
at fault. `fhir_gateway.errors` maps every class to an HTTP status and an OperationOutcome in one
table, so adapters never think in HTTP.
"""

from __future__ import annotations

# The system of the gateway's own issue details codes (`OperationOutcome.issue.details`), so a
# client can tell its cases apart by code rather than by words: `held-back` (not sent, earlier
# writes wait; nothing was stored), `ehr-refused` (the EHR's refusal; `details.text` holds the
# EHR's own first words).
ISSUE_SYSTEM = "urn:fhir-gateway:issue"


def gateway_details(code: str, text: str | None = None) -> dict:
    """An issue's `details` CodeableConcept with one of the gateway's codes."""
    out: dict = {"coding": [{"system": ISSUE_SYSTEM, "code": code}]}
    if text:
        out["text"] = text
    return out


class FhirError(Exception):
    """Base of every typed error; `code` is an OperationOutcome issue code, `details` an
    optional CodeableConcept for its first issue."""

    code = "exception"
    details: dict | None = None

    def __init__(
        self,
        diagnostics: str,
        *,
        expression: str | list[str] | None = None,
        code: str | None = None,
        issues: list[dict] | None = None,
        details: dict | None = None,
    ) -> None:
        super().__init__(diagnostics)
        if details is not None:
            self.details = details
        self.diagnostics = diagnostics
        if isinstance(expression, str):
            expression = [expression]
        self.expression = expression or []
        if code:
            self.code = code
        # Extra issues (e.g. one per validation error) beyond the first.
        self.issues = issues or []


class NotFound(FhirError):
    code = "not-found"


class Gone(FhirError):
    code = "deleted"


class Conflict(FhirError):
    code = "conflict"


class PreconditionFailed(FhirError):
    code = "conflict"


class Invalid(FhirError):
    """The request or resource cannot be understood or fails basic FHIR rules (400)."""

    code = "invalid"


class Unprocessable(FhirError):
    """Well-formed, but violates a business rule or binding (422)."""

    code = "business-rule"


class Forbidden(FhirError):
    code = "forbidden"


class NotSupported(FhirError):
    """The interaction or operation is not available for this type/EHR."""

    code = "not-supported"


class UpstreamUnavailable(FhirError):
    """The EHR cannot take the request now (down, overloaded, rate limiting); `retry_after`
    says how long to wait when the EHR said so (seconds)."""

    code = "transient"

    def __init__(self, diagnostics: str, *, retry_after: float | None = None, **kw) -> None:
        super().__init__(diagnostics, **kw)
        self.retry_after = retry_after


class HeldBack(UpstreamUnavailable):
    """Not sent to the EHR at all (earlier writes it must not overtake still wait): unlike
    other `UpstreamUnavailable`s, nothing can have been stored."""

    details = gateway_details("held-back")


class UpstreamError(FhirError):
    code = "exception"


class PartialResult(UpstreamError):
    """A write of several steps failed and the EHR may hold some of them (undoing them failed,
    or a step's outcome is unknown)."""


class WrongFhirVersion(UpstreamError):
    """The EHR speaks another FHIR version than R4."""
