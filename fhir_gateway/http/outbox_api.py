"""Where a queued write can be followed: `GET /fhir/_outbox/{id}` answers a Task whose status
says queued (requested), stored (completed, with the stored resource as output) or failed (with
the EHR's OperationOutcome contained); `GET /fhir/_outbox` lists the caller's own entries
(a patient's: what that user made for that patient through that app)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, Response, current_app, request

from adapters.errors import NotFound
from fhir_gateway.access.policy import Principal
from fhir_gateway.http.negotiation import render, response_mimetype
from fhir_gateway.http.rest import base_url, principal
from fhir_gateway.outbox import Entry

bp = Blueprint("outbox", __name__)


def _outbox():
    outbox = current_app.extensions["fhir_gateway"].service.outbox
    if outbox is None:
        raise NotFound("This gateway keeps no outbox (its EHR is the embedded store)")
    return outbox


@dataclass(frozen=True)
class _Whose:
    """Which entries a caller may see: its client's, in `lane` when set, made by
    `requester` when set (and, with `unattributed`, those that name no requester)."""

    client_id: str
    lane: str | None = None
    requester: str | None = None
    unattributed: bool = False

    def sees(self, entry: Entry) -> bool:
        if entry.client_id != self.client_id or self.lane not in (None, entry.lane):
            return False
        return self.requester is None or entry.requester == self.requester or \
            (self.unattributed and entry.requester is None)


def _whose() -> _Whose | None:
    return visibility(principal())


def visibility(who: Principal | None) -> _Whose | None:
    """What a caller (a Principal) sees; None with SMART off (everything).

    - A token with a patient context: what its user queued through its app for that patient
      (never what clinicians or a proxy queued about them); entries from before requesters
      were kept only when the user is that patient.
    - A clinician's or a system token (user/ or system/ scopes): what its client queued.
    - Any other token (a person without a patient context): what its user queued.
    """
    if who is None:
        return None
    client = who.client_id or "\0"
    user = who.user or "\0"
    patient = who.patient or ((who.fhir_user or "").partition("/")[2]
                              if (who.fhir_user or "").startswith("Patient/") else None)
    if patient:
        return _Whose(client, patient, user, unattributed=who.fhir_user == f"Patient/{patient}")
    if any(g.context in ("user", "system") for g in who.scopes.grants):
        return _Whose(client)
    return _Whose(client, requester=user)


@bp.get("/_outbox/<entry_id>")
def status(entry_id: str) -> Response:
    entry = _outbox().get(entry_id)
    whose = _whose()
    if entry is None or (whose is not None and not whose.sees(entry)):
        raise NotFound(f"No queued write {entry_id!r} is known", expression="id")
    return render(entry.as_task(base_url()), 200, response_mimetype(request), False)


@bp.get("/_outbox")
def listing() -> Response:
    whose = _whose()  # chosen in the query: the caller's newest entries, not the table's
    entries = _outbox().list() if whose is None else _outbox().list(
        lane=whose.lane, client_id=whose.client_id, requester=whose.requester,
        unattributed=whose.unattributed)
    base = base_url()
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(entries),
              "link": [{"relation": "self", "url": f"{base}/_outbox"}],
              "entry": [{"fullUrl": f"{base}/_outbox/{e.id}", "resource": e.as_task(base),
                         "search": {"mode": "match"}} for e in entries]}
    return render(bundle, 200, response_mimetype(request), False)
