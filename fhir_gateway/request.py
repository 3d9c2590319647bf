"""`FhirRequest` and `FhirResponse`: one FHIR interaction, independent of HTTP.

The REST blueprint parses HTTP into a FhirRequest; batch and transaction entries become
FhirRequests too, so every path through the gateway meets the same checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FhirRequest:
    interaction: str  # read, vread, history-instance, search-type, create, update, delete, ...
    resource_type: str | None = None
    id: str | None = None
    version_id: str | None = None
    params: list[tuple[str, str]] = field(default_factory=list)
    body: dict | None = None
    if_match: str | None = None
    if_none_exist: str | None = None
    prefer: dict[str, str] = field(default_factory=dict)
    operation: str | None = None
    # Who is calling (fhir_gateway.access.Principal); None only for trusted in-process callers
    # such as the import command.
    principal: object | None = None
    # Request headers operations may read (e.g. Idempotency-Key), lower-cased names.
    headers: dict[str, str] = field(default_factory=dict)

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None

    @property
    def strict(self) -> bool:
        return self.prefer.get("handling") == "strict"


@dataclass
class FhirResponse:
    status: int
    resource: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Post-processing the renderer may apply (`_summary`, `_elements`) for reads and searches.
    shape: bool = False
    # A non-FHIR answer (an operation's printable page): sent as is, with its own media type.
    body: bytes | None = None
    mimetype: str | None = None
    # Whose data this is (the access log), when the service already knows it: else the
    # renderer looks at the resource (see `fhir_gateway.access.policy.owner`).
    owner: str | None = None
    owner_known: bool = False
    # Bodies this very answer was written to, by (media type, pretty), shared by the requests a
    # kept search answer serves (`fhir_gateway.search_answers`); None: written anew each time.
    rendered: dict[tuple[str, bool], bytes] | None = None


def parse_prefer(header: str | None) -> dict[str, str]:
    """`Prefer: return=minimal, handling=strict` -> {'return': 'minimal', 'handling': 'strict'}."""
    out: dict[str, str] = {}
    for part in (header or "").replace(";", ",").split(","):
        key, _, value = part.strip().partition("=")
        if key:
            out[key.strip().lower()] = value.strip().strip('"').lower()
    return out


def parse_etag(value: str | None) -> str | None:
    """`W/"3"` or `"3"` -> '3'."""
    if value is None:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')
