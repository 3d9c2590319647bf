"""The apps that can reach a patient's record, and removing one: `Patient/{id}/$apps` and
`Patient/{id}/$revoke-app`.

Both answer from the authorization server's own records (no EHR call): an app has access while
it holds a live grant for the patient, an unexpired and unrevoked refresh token or access
token. Removing an app revokes every token it holds for the patient through the same
revocation path as RFC 7009 (`smart_launch.records`), so the revocation epoch moves and a
revoked token fails on its next use in every gateway process. Only the patient's own
patient-context token may call them: another patient's id looks missing (404), a token without
patient context is refused (403). No token values or digests are ever returned.
"""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.errors import Forbidden, Invalid, NotFound, NotSupported
from fhir_gateway.audit import utc_stamp
from fhir_gateway.operations.registry import OperationContext, OperationSpec, ParamSpec
from fhir_gateway.request import FhirResponse

MAX_CLIENT_ID = 128


def _instant(epoch: float) -> str:
    return utc_stamp(datetime.fromtimestamp(epoch, UTC))


def _own_patient(ctx: OperationContext, op: str) -> tuple[str, object]:
    """(the patient, the caller) when the caller is that patient's own patient-context token."""
    who, smart = ctx.request.principal, ctx.service.smart
    if smart is None or who is None:
        raise NotSupported(f"${op} needs the gateway's SMART authorization server (auth is off)",
                           expression=f"Patient.${op}")
    # A person signed in for this patient (the patient or a proxy: fhirUser a Patient or a
    # RelatedPerson) through an app holding patient/ scopes only. A clinic user's EHR launch
    # or a system token also carries a patient context, but it is not the patient's choice.
    person = (who.fhir_user or "").split("/", 1)[0] in ("Patient", "RelatedPerson")
    if not who.patient or not person or any(g.context != "patient" for g in who.scopes.grants):
        raise Forbidden(f"${op} needs the patient's own token: a patient (or proxy) signed in, "
                        "patient/ scopes only, a patient context", expression="Patient")
    if ctx.request.id != who.patient:
        raise NotFound(f"Patient/{ctx.request.id} is not known", expression="Patient")
    return who.patient, who


def _name(smart, client_id: str) -> str:
    client = smart.clients.get(client_id)
    return client.name if client is not None and client.name else ""


def _app_parts(smart, audit, pid: str, grant: dict, caller: str) -> list[dict]:
    cid = grant["client_id"]
    parts: list[dict] = [{"name": "client", "valueString": cid}]
    if name := _name(smart, cid):
        parts.append({"name": "name", "valueString": name})
    parts.append({"name": "scope", "valueString": grant["scope"]})
    if grant["granted"] is not None:
        parts.append({"name": "granted", "valueInstant": _instant(grant["granted"])})
    parts.append({"name": "expires", "valueInstant": _instant(grant["expires"])})
    if audit is not None:
        last = audit.search(patient=pid, client_id=cid, count=1)
        if last:
            parts.append({"name": "last-used", "valueInstant": last[0]["recorded"]})
    parts.append({"name": "current", "valueBoolean": cid == caller})
    return parts


def apps(ctx: OperationContext) -> FhirResponse:
    pid, who = _own_patient(ctx, "apps")
    smart = ctx.service.smart
    grants = smart.records.live_grants(pid)
    params = [{"name": "app", "part": _app_parts(smart, ctx.service.audit, pid, grant,
                                                  who.client_id)} for grant in grants]
    body: dict = {"resourceType": "Parameters"}
    if params:
        body["parameter"] = params
    return FhirResponse(200, body)


def revoke_app(ctx: OperationContext) -> FhirResponse:
    pid, who = _own_patient(ctx, "revoke-app")
    client = ctx.one("client", required=True)
    if not isinstance(client, str) or not client.strip() or len(client) > MAX_CLIENT_ID:
        raise Invalid(f"client must be an app's client id (1 to {MAX_CLIENT_ID} characters)",
                      expression="client")
    smart = ctx.service.smart
    grant = next((g for g in smart.records.live_grants(pid) if g["client_id"] == client), None)
    if grant is None:
        raise NotFound(f"The app {client!r} has no access to this record", expression="client")
    smart.records.revoke_client_for_patient(client, pid)
    smart.audit("revoke", "allowed", client_id=client, patient=pid,
                user=who.fhir_user or who.subject, detail="app access removed by the patient")
    parts = [{"name": "client", "valueString": client}]
    if name := _name(smart, client):
        parts.append({"name": "name", "valueString": name})
    parts += [{"name": "scope", "valueString": grant["scope"]},
              {"name": "grants", "valueInteger": grant["families"]},
              {"name": "tokens", "valueInteger": grant["tokens"]}]
    return FhirResponse(200, {"resourceType": "Parameters", "parameter": parts})


_APP_PARTS = (
    ParamSpec("client", "string", min=1, use="out", documentation="The app's client id"),
    ParamSpec("name", "string", use="out", documentation="The app's registered name"),
    ParamSpec("scope", "string", min=1, use="out",
              documentation="The scopes its live tokens carry, space separated"),
    ParamSpec("granted", "instant", use="out", documentation="When the patient signed in to it"),
    ParamSpec("expires", "instant", min=1, use="out",
              documentation="When its last live token (or refresh grant) ends"),
    ParamSpec("last-used", "instant", use="out",
              documentation="Its newest entry in the patient's access log"),
    ParamSpec("current", "boolean", min=1, use="out",
              documentation="True for the app that is asking"),
)

APPS = OperationSpec(
    name="apps", resource_type="Patient", handler=apps, instance=True, type_level=False,
    title="The apps that can reach the patient's record",
    description="One `app` part per SMART app holding a live grant for this patient (an "
                "unexpired, unrevoked refresh token or access token). For the patient's own "
                "patient-context token only (another patient looks missing: 404; no patient "
                "context: 403). Never returns token values.",
    needs=(("Patient", "r"),),
    parameters=(ParamSpec("app", "", max="*", use="out", part=_APP_PARTS),),
)
REVOKE_APP = OperationSpec(
    name="revoke-app", resource_type="Patient", handler=revoke_app, instance=True,
    type_level=False, affects_state=True,
    title="Remove an app's access to the patient's record",
    description="Revokes every access and refresh token the app `client` holds for this "
                "patient; each fails on its next use, in every gateway process. An app with no "
                "live grant here is a 404. The caller's token needs write access to the Patient "
                "(patient/Patient.u or wider), so a read-only app cannot remove others.",
    needs=(("Patient", "u"),),
    ehr_needs=(("Patient", "r"),),
    parameters=(
        ParamSpec("client", "string", min=1, documentation="The app's client id (from $apps)"),
        ParamSpec("client", "string", min=1, use="out", documentation="The app removed"),
        ParamSpec("name", "string", use="out", documentation="Its registered name"),
        ParamSpec("scope", "string", min=1, use="out", documentation="What it could do"),
        ParamSpec("grants", "integer", min=1, use="out",
                  documentation="How many of its grants were ended"),
        ParamSpec("tokens", "integer", min=1, use="out",
                  documentation="How many live tokens were revoked"),
    ),
)
SPECS = [APPS, REVOKE_APP]
