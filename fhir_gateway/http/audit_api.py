"""The audit log through FHIR: `AuditEvent` search for administrators (system scope) and a
patient's own access log, `Patient/{id}/$access-log` ("who looked at my record").

Both read the gateway's hash-chained audit log, not the EHR. Paging is newest first with a
`_before` sequence number in the `next` link.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, request

from adapters.errors import Forbidden, Invalid, NotFound
from fhir_gateway.bundles import page_url
from fhir_gateway.http.negotiation import render, response_mimetype
from fhir_gateway.http.rest import base_url, principal
from fhir_gateway.search_request import parse_count

bp = Blueprint("fhir_audit", __name__)


def _page(entries: list[dict], path: str, params: list[tuple[str, str]], count: int) -> dict:
    base = base_url()
    audit = current_app.extensions["fhir_gateway"].audit
    bundle: dict = {"resourceType": "Bundle", "type": "searchset",
                    "link": [{"relation": "self", "url": page_url(base, path, params)}]}
    if len(entries) == count and entries:
        nxt = [(k, v) for k, v in params if k != "_before"] + [("_before",
                                                               str(entries[-1]["seq"]))]
        bundle["link"].append({"relation": "next", "url": page_url(base, path, nxt)})
    events = [audit.as_audit_event(row, base) for row in entries]
    _name_apps(events)
    if events:
        bundle["entry"] = [{"fullUrl": f"{base}/AuditEvent/{e['id']}", "resource": e,
                            "search": {"mode": "match"}} for e in events]
    return bundle


def _name_apps(events: list[dict]) -> None:
    """Give each app agent its registered name (`who.display`), so a reader of the log sees
    which app it was even after the app's access was removed."""
    smart = current_app.extensions.get("smart")
    if smart is None:
        return
    names: dict[str, str] = {}
    for event in events:
        for agent in event.get("agent") or []:
            who = agent.get("who") or {}
            client_id = (who.get("identifier") or {}).get("value")
            if not client_id:
                continue
            if client_id not in names:
                client = smart.clients.get(client_id)
                name = client.name if client is not None else ""
                names[client_id] = name if name != client_id else ""
            if names[client_id]:
                who["display"] = names[client_id]


def _paging() -> tuple[int, int | None]:
    gateway = current_app.extensions["fhir_gateway"]
    count = max(parse_count(request.args.get("_count"), gateway.config.limits), 1)
    before = request.args.get("_before")
    if before is not None and not (before.isascii() and before.isdigit()):
        raise Invalid("_before must be a sequence number", expression="_before")
    return count, int(before) if before else None


@bp.get("/AuditEvent")
def audit_events() -> Response:
    mimetype = response_mimetype(request)
    who = principal()
    if who is None or not any(gr.context == "system" and gr.allows("AuditEvent", "s")
                              for gr in who.scopes.grants):
        raise Forbidden("Searching the audit log needs a system/AuditEvent.rs scope",
                        expression="AuditEvent")
    g.exchange.access = ("search-type", "AuditEvent", None)
    count, before = _paging()
    patient = request.args.get("patient")
    if patient:
        patient = patient.rsplit("/", 1)[-1]
    entries = current_app.extensions["fhir_gateway"].audit.search(
        patient=patient, user=request.args.get("agent"), since=_since(), count=count,
        before_seq=before)
    params = [(k, v) for k, v in request.args.items(multi=True) if k != "_format"]
    return render(_page(entries, "AuditEvent", params, count), 200, mimetype, False)


def _since() -> str | None:
    value = request.args.get("date")
    if not value:
        return None
    if not value.startswith("ge"):
        raise Invalid("date takes ge<date> here (entries since that moment)", expression="date")
    return value[2:]


@bp.get("/Patient/<pid>/$access-log")
def access_log(pid: str) -> Response:
    mimetype = response_mimetype(request)
    who = principal()
    grants = who.scopes.grants if who is not None else ()
    own = who is not None and who.patient == pid and any(
        gr.context in ("patient", "user") and gr.allows("AuditEvent", "s") for gr in grants)
    system = any(gr.context == "system" and gr.allows("AuditEvent", "s") for gr in grants)
    if not (own or system):
        raise NotFound(f"Patient/{pid} is not known", expression="Patient")
    g.exchange.access = ("operation", "Patient", pid)
    count, before = _paging()
    entries = current_app.extensions["fhir_gateway"].audit.search(
        patient=pid, count=count, before_seq=before)
    params = [(k, v) for k, v in request.args.items(multi=True) if k != "_format"]
    return render(_page(entries, f"Patient/{pid}/$access-log", params, count), 200, mimetype,
                  False)
