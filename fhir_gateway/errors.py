"""One table from typed errors to HTTP status, and the OperationOutcome every error becomes."""

from __future__ import annotations

from adapters.errors import (
    Conflict,
    FhirError,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    NotSupported,
    PreconditionFailed,
    Unprocessable,
    UpstreamError,
    UpstreamUnavailable,
)


class NotAcceptable(FhirError):
    code = "not-supported"


class UnsupportedMediaType(FhirError):
    code = "not-supported"


class PayloadTooLarge(FhirError):
    code = "too-costly"


class MethodNotAllowed(FhirError):
    code = "not-supported"


class Unauthorized(FhirError):
    """401: no usable bearer token. `challenge` is the WWW-Authenticate value (RFC 6750)."""

    code = "login"

    def __init__(self, diagnostics: str, *, error: str | None = "invalid_token") -> None:
        super().__init__(diagnostics)
        text = diagnostics.replace('"', "'")
        self.challenge = 'Bearer realm="fhir"' + (
            f', error="{error}", error_description="{text}"' if error else "")


STATUS: dict[type[FhirError], int] = {
    Invalid: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    MethodNotAllowed: 405,
    NotAcceptable: 406,
    Conflict: 409,
    Gone: 410,
    PreconditionFailed: 412,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    Unprocessable: 422,
    NotSupported: 501,
    UpstreamError: 502,
    UpstreamUnavailable: 503,
}


def status_for(error: FhirError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def issue(severity: str, code: str, diagnostics: str,
          expression: list[str] | None = None, details: dict | None = None) -> dict:
    out = {"severity": severity, "code": code}
    if details:
        out["details"] = details
    out["diagnostics"] = diagnostics
    if expression:
        out["expression"] = expression
    return out


def operation_outcome(issues: list[dict]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": issues}


def outcome_for(error: FhirError) -> dict:
    """The OperationOutcome for a typed error: its own issue first, then any extra ones."""
    severity = "error" if status_for(error) < 500 else "fatal"
    first = issue(severity, error.code, error.diagnostics, error.expression, error.details)
    return operation_outcome([first, *error.issues])
