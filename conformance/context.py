"""What checks share during one run: the options, the HTTP client, the server's
CapabilityStatement, data found on the server, and what the run created (to delete after)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from conformance.client import Http, json_body
from conformance.evidence import Exchange
from conformance.model import Fail, Skip

# Types probed when the server declares none (no CapabilityStatement).
FALLBACK_TYPES = ["Patient", "Observation", "Condition", "Encounter", "MedicationRequest",
                  "AllergyIntolerance", "Immunization", "Practitioner", "Organization"]


@dataclass
class Options:
    base: str
    token: str | None = None
    groups: list[str] | None = None
    allow_writes: bool = False
    timeout: float = 30.0
    smart_client: str | None = None
    client_secret: str | None = None
    redirect_uri: str = "http://127.0.0.1:9/callback"
    scope: str | None = None
    patient_logins: list[tuple[str, str]] = field(default_factory=list)
    token2: str | None = None
    patient: str | None = None
    patient2: str | None = None
    max_pages: int = 20
    backend_client: str | None = None
    backend_key: str | None = None
    backend_scope: str = "system/*.rs"


@dataclass
class Session:
    """A token the runner holds, and what the server said with it."""

    access_token: str
    patient: str | None = None
    scope: str = ""
    refresh_token: str | None = None
    response: dict[str, Any] = field(default_factory=dict)
    login: tuple[str, str] | None = None


@dataclass
class RunContext:
    options: Options
    http: Http
    capability: dict[str, Any] | None = None
    metadata_exchange: Exchange | None = None
    sessions: list[Session] = field(default_factory=list)
    smart_config: dict[str, Any] | None = None
    seen: list[tuple[dict[str, Any], Exchange]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    errors: list[tuple[int, bool, Exchange]] = field(default_factory=list)
    _samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    # -- the CapabilityStatement ----------------------------------------------------------

    def rest(self) -> dict[str, Any]:
        cap = self.capability or {}
        for rest in cap.get("rest") or []:
            if rest.get("mode", "server") == "server":
                return rest
        return {}

    def declared(self, rtype: str) -> dict[str, Any] | None:
        for res in self.rest().get("resource") or []:
            if res.get("type") == rtype:
                return res
        return None

    def types(self) -> list[str]:
        """Declared resource types, or a common few when the server declares none."""
        decl = [r.get("type") for r in self.rest().get("resource") or [] if r.get("type")]
        return decl or list(FALLBACK_TYPES)

    def interactions(self, rtype: str) -> set[str]:
        res = self.declared(rtype)
        return {i.get("code") for i in (res or {}).get("interaction") or []}

    def supports(self, rtype: str, interaction: str) -> bool:
        """True when declared; with no CapabilityStatement at all, assume the basics."""
        if not self.capability:
            return interaction in ("read", "vread", "search-type", "history-instance",
                                   "create", "update", "delete")
        return interaction in self.interactions(rtype)

    def search_params(self, rtype: str) -> list[dict[str, Any]]:
        return list((self.declared(rtype) or {}).get("searchParam") or [])

    def operations(self) -> dict[str, list[str]]:
        """Declared operation name (without $) -> types that declare it ('' for system)."""
        out: dict[str, list[str]] = {}
        for op in self.rest().get("operation") or []:
            out.setdefault(op.get("name", "").lstrip("$"), []).append("")
        for res in self.rest().get("resource") or []:
            for op in res.get("operation") or []:
                out.setdefault(op.get("name", "").lstrip("$"), []).append(res.get("type"))
        return out

    # -- sessions and writes ----------------------------------------------------------------

    @property
    def patient(self) -> str | None:
        """The primary session's patient in context (or --patient)."""
        if self.sessions and self.sessions[0].patient:
            return self.sessions[0].patient
        return self.options.patient

    def require_writes(self) -> None:
        if not self.options.allow_writes:
            raise Skip("writes are off (run with --allow-writes)")

    def created_resource(self, resp: httpx.Response, rtype: str) -> dict[str, Any]:
        """The resource a create answered (or read back from Location); noted for cleanup."""
        body = json_body(resp)
        rid = None
        if isinstance(body, dict) and body.get("resourceType") == rtype:
            rid = body.get("id")
        loc = resp.headers.get("location") or resp.headers.get("content-location") or ""
        if not rid and f"{rtype}/" in loc:
            rid = loc.split(f"{rtype}/", 1)[1].split("/")[0]
        if not rid:
            raise Fail(f"{rtype} create answered {resp.status_code} with neither the resource "
                       "nor a Location")
        self.created.append(f"{rtype}/{rid}")
        if not (isinstance(body, dict) and body.get("resourceType") == rtype):
            body = json_body(self.http.get(f"{rtype}/{rid}")) or {}
        return body

    # -- data found on the server -------------------------------------------------------------

    def samples(self, rtype: str, count: int = 10) -> list[dict[str, Any]]:
        """Up to `count` resources of a type the runner may see (searched once, cached)."""
        if rtype not in self._samples:
            params: dict[str, str] = {"_count": str(count)}
            if self.patient and rtype not in ("Patient",) and self.compartment_type(rtype):
                params["patient"] = f"Patient/{self.patient}"
            resp = self.http.get(rtype, params=params)
            if resp.status_code == 401 and "authorization" not in resp.request.headers:
                raise Skip("the server wants a token (401 without one): give --token or "
                           "--smart-client")
            body = json_body(resp)
            found = []
            if resp.status_code == 200 and isinstance(body, dict):
                found = [e["resource"] for e in body.get("entry") or []
                         if isinstance(e.get("resource"), dict)
                         and e["resource"].get("resourceType") == rtype
                         and (e.get("search") or {}).get("mode", "match") == "match"]
            if not found and self.options.allow_writes and rtype in ("Patient", "Observation") \
                    and self.supports(rtype, "create"):
                found = [self._create_sample(rtype)]
            self._samples[rtype] = found
        return self._samples[rtype]

    def _create_sample(self, rtype: str) -> dict[str, Any]:
        """Data to check with on a server that has none (only with --allow-writes; deleted
        at the end of the run like everything the runner creates)."""
        from conformance.checks.write import RUN_SYSTEM, observation

        if rtype == "Observation":
            body = observation(self)
        else:
            import uuid

            body = {"resourceType": "Patient", "active": True, "gender": "female",
                    "birthDate": "1970-01-01",
                    "name": [{"family": "Conformance", "given": ["Probe"]}],
                    "identifier": [{"system": RUN_SYSTEM, "value": str(uuid.uuid4())}]}
        resp = self.http.post(rtype, json_data=body)
        if resp.status_code not in (200, 201):
            raise Skip(f"found no {rtype} on the server, and creating one answered "
                       f"{resp.status_code}")
        return self.created_resource(resp, rtype)

    def sample(self, rtype: str) -> dict[str, Any]:
        found = self.samples(rtype)
        if not found:
            raise Skip(f"found no {rtype} on the server to check with")
        return found[0]

    def compartment_type(self, rtype: str) -> bool:
        return any(p.get("name") == "patient" for p in self.search_params(rtype)) or (
            not self.capability and rtype != "Practitioner" and rtype != "Organization")

    def first_with_data(self, types: list[str]) -> tuple[str, dict[str, Any]]:
        for rtype in types:
            if self.supports(rtype, "search-type") and self.samples(rtype):
                return rtype, self.samples(rtype)[0]
        raise Skip("found no data on the server in " + ", ".join(types))
