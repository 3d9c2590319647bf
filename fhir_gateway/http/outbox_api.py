"""Where a queued write can be followed: `GET /fhir/_outbox/{id}` answers a Task whose status
says queued (requested), stored (completed, with the stored resource as output) or failed (with
the EHR's OperationOutcome contained); `GET /fhir/_outbox` lists the caller's own entries
(a patient's: what that user made for that patient through that app)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from adapters.errors import NotFound
from fhir_gateway.http.negotiation import render, response_mimetype
from fhir_gateway.http.rest import base_url, principal
from fhir_gateway.outbox import Entry

bp = Blueprint("outbox", __name__)


def _outbox():
    outbox = current_app.extensions["fhir_gateway"].service.outbox
    if outbox is None:
        raise NotFound("This gateway keeps no outbox (its EHR is the embedded store)")
    return outbox


def _whose() -> tuple[str | None, str | None, str | None] | None:
    """(lane, client id, requester) a caller's entries are found by: a patient's token sees
    what its user made through its app for its patient (not what clinicians or other apps
    queued about that patient), any other token what its client made; None with SMART off
    (everything is visible)."""
    who = principal()
    if who is None:
        return None
    patient = who.patient or ((who.fhir_user or "").partition("/")[2]
                              if (who.fhir_user or "").startswith("Patient/") else None)
    client = who.client_id or "\0"
    return (patient, client, who.user or "\0") if patient else (None, client, None)


def _mine(entry: Entry) -> bool:
    whose = _whose()
    if whose is None:
        return True
    lane, client_id, requester = whose
    return entry.client_id == client_id and (lane is None or entry.lane == lane) and \
        (requester is None or entry.requester in (requester, None))


@bp.get("/_outbox/<entry_id>")
def status(entry_id: str) -> Response:
    entry = _outbox().get(entry_id)
    if entry is None or not _mine(entry):
        raise NotFound(f"No queued write {entry_id!r} is known", expression="id")
    return render(entry.as_task(base_url()), 200, response_mimetype(request), False)


@bp.get("/_outbox")
def listing() -> Response:
    whose = _whose()  # chosen in the query: the caller's newest entries, not the table's
    entries = _outbox().list() if whose is None else \
        _outbox().list(lane=whose[0], client_id=whose[1], requester=whose[2])
    base = base_url()
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(entries),
              "link": [{"relation": "self", "url": f"{base}/_outbox"}],
              "entry": [{"fullUrl": f"{base}/_outbox/{e.id}", "resource": e.as_task(base),
                         "search": {"mode": "match"}} for e in entries]}
    return render(bundle, 200, response_mimetype(request), False)
