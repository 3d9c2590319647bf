"""Privacy: who looked at my record, the apps with access, and removing an app's access.

Reads the server's `Patient/{id}/$access-log` (AuditEvents, newest first, paged with the
`_before` number of its `next` link) and `Patient/{id}/$apps`; removes an app with
`Patient/{id}/$revoke-app` after a confirm step. The app is chosen in the POST body, checked
against the patient's own `$apps` list before anything is sent, and each form carries a
one-time `form_id` (`portal.forms`). Removing this website's own access signs the patient out.

The helpers at the top are pure (FHIR JSON and a `t` function in, plain words out), so the
rules are unit tested without a server.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx
from flask import abort, redirect, render_template, request, session, url_for

from portal.auth import reset_session
from portal.blueprint import api, bp, patient_id, signed_in, state, t
from portal.fhir_api import GatewayError
from portal.forms import new_form_id, use_form_id
from portal.messages import EN

log = logging.getLogger("portal.privacy")
LOG_PAGE = 20
_CLIENT = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces
_SCOPE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(?:\?(.*))?$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
Translate = Callable[..., str]

# -- pure helpers ---------------------------------------------------------------------------


def type_words(rtype: str, t: Translate) -> str:
    """A resource type in the patient's words ("test results and measurements")."""
    key = f"privacy.type.{rtype}"
    return t(key) if key in EN else rtype


def _only(query: str, t: Translate) -> str:
    """What a v2 scope's query narrows to, in words ("only vital signs")."""
    values = [v for vs in parse_qs(query).values() for v in vs]
    words = [t(f"privacy.only.{v}") for v in values if f"privacy.only.{v}" in EN]
    return words[0] if len(words) == 1 and len(values) == 1 else t("privacy.only.part")


def scope_phrases(scope: str, t: Translate) -> list[str]:
    """What an app's scopes let it do, as short sentences ("Can see your whole record")."""
    see: list[str] = []
    change: list[str] = []
    extra: list[str] = []
    for token in scope.split():
        match = _SCOPE.match(token)
        if match:
            _context, rtype, perms, query = match.groups()
            letters = _V1.get(perms, perms)
            what = t("privacy.type.all") if rtype == "*" else type_words(rtype, t)
            if query:
                what = f"{what} ({_only(query, t)})"
            if ("r" in letters or "s" in letters) and what not in see:
                see.append(what)
            if any(p in letters for p in "cud") and what not in change:
                change.append(what)
        elif token in ("openid", "fhirUser", "profile"):
            if t("privacy.can.identity") not in extra:
                extra.append(t("privacy.can.identity"))
        elif token == "offline_access":
            extra.append(t("privacy.can.offline"))
        elif token == "online_access":
            extra.append(t("privacy.can.online"))
        elif token.startswith("launch"):
            continue
        else:
            extra.append(t("privacy.can.other", scope=token))
    out = []
    if see:
        out.append(t("privacy.can.see", what=", ".join(see)))
    if change:
        out.append(t("privacy.can.change", what=", ".join(change)))
    return out + extra


def _value(part: dict) -> object:
    return next((v for k, v in part.items() if k.startswith("value")), None)


def apps_of(parameters: dict) -> list[dict]:
    """The `app` parts of a `$apps` answer as flat dicts (client, name, scope, granted...)."""
    out = []
    for param in parameters.get("parameter") or []:
        if param.get("name") == "app":
            out.append({p.get("name"): _value(p) for p in param.get("part") or []})
    return out


def when(instant: str | None) -> str:
    """A FHIR instant as "2026-12-01 14:30 UTC" (the server keeps UTC)."""
    if not instant:
        return ""
    text = instant[:16].replace("T", " ")
    return f"{text} UTC" if len(text) == 16 else text


def _who(event: dict, own: str, t: Translate) -> str:
    agent = next((a for a in event.get("agent") or [] if a.get("requestor")), {})
    who = agent.get("who") or {}
    ref = who.get("reference") or ""
    if ref == f"Patient/{own}":
        return t("privacy.who.you")
    if ref.startswith(("Patient/", "RelatedPerson/")):
        return t("privacy.who.for_you")
    if ref.startswith(("Practitioner/", "PractitionerRole/")):
        return t("privacy.who.staff")
    if "identifier" in who:
        return t("privacy.who.system")
    if who.get("display") in (None, "", "unknown"):
        return t("privacy.who.unknown")
    return t("privacy.who.account")


def _app(event: dict, names: dict[str, str]) -> str:
    """Which app: our own name for it (this website, an app with access), else the name the
    server gives it, else its client id."""
    for agent in event.get("agent") or []:
        who = agent.get("who") or {}
        ident = who.get("identifier") or {}
        if (ident.get("system") or "").endswith("/client-id") and ident.get("value"):
            return names.get(ident["value"]) or who.get("display") or ident["value"]
    return ""


_DID = {"read": "read", "vread": "read", "history-instance": "history", "history-type": "history",
        "history": "history", "search-type": "search", "search": "search", "create": "create",
        "update": "update", "patch": "update", "delete": "delete"}
_ACTION = {"R": "read", "C": "create", "U": "update", "D": "delete"}


def _what(event: dict, t: Translate) -> str:
    etype = (event.get("type") or {}).get("code")
    sub = ((event.get("subtype") or [{}])[0]).get("code")
    if etype == "110114":
        return t({"110122": "privacy.did.login", "110123": "privacy.did.logout"}
                 .get(sub, "privacy.did.auth"))
    entities = event.get("entity") or []
    thing = next(((e.get("type") or {}).get("code") for e in entities
                  if (e.get("role") or {}).get("code") in ("4", "24")), None)
    what = type_words(thing, t) if thing else t("privacy.type.Patient")
    did = _DID.get(sub) if etype == "rest" else None
    did = did or _ACTION.get(event.get("action") or "", "operation")
    return t(f"privacy.did.{did}", what=what)


def log_rows(events: list[dict], own: str, names: dict[str, str], t: Translate) -> list[dict]:
    """AuditEvents as table rows in plain words: when, who, app, what, outcome."""
    rows = []
    for event in events:
        if event.get("resourceType") != "AuditEvent":
            continue
        outcome = {"0": "privacy.outcome.ok", "4": "privacy.outcome.refused"}.get(
            event.get("outcome") or "", "privacy.outcome.failed")
        rows.append({"when": when(event.get("recorded")), "who": _who(event, own, t),
                     "app": _app(event, names), "what": _what(event, t),
                     "outcome": t(outcome), "failed": outcome != "privacy.outcome.ok"})
    return rows


def older_than(bundle: dict) -> str | None:
    """The `_before` number of a log page's `next` link (the next, older page), if any."""
    for link in bundle.get("link") or []:
        if link.get("relation") == "next":
            before = parse_qs(urlsplit(link.get("url", "")).query).get("_before", [""])[0]
            return before if before.isdigit() else None
    return None


# -- views ----------------------------------------------------------------------------------


def _apps() -> list[dict]:
    own = state().settings.client_id
    apps = apps_of(api().get_operation(f"Patient/{patient_id()}/$apps"))
    for app in apps:
        app["this"] = app.get("client") == own
        app["label"] = str(app.get("name") or app.get("client") or "")
        app["can"] = scope_phrases(str(app.get("scope") or ""), t)
    apps.sort(key=lambda a: (not a["this"], str(a["label"]).lower()))
    return apps


def _part(load):
    """One part of the page; a server that cannot answer it (or does not offer the operation)
    makes that part say so instead of failing the page."""
    try:
        return load(), False
    except GatewayError as exc:
        log.warning("privacy part failed: %s", exc.status)
        return None, True
    except httpx.HTTPError as exc:
        log.warning("privacy part failed: %s", type(exc).__name__)
        return None, True


def _page(errors: dict[str, str] | None = None, status: int = 200):
    before = request.args.get("before")
    if before is not None and not (before.isascii() and before.isdigit() and len(before) < 19):
        abort(404)
    apps, apps_failed = _part(_apps)
    apps = apps or []
    names = {str(a.get("client")): a["label"] for a in apps}
    names[state().settings.client_id] = t("privacy.this_website")
    params = {"_count": str(LOG_PAGE), **({"_before": before} if before else {})}
    bundle, log_failed = _part(lambda: api().get_operation(
        f"Patient/{patient_id()}/$access-log", params))
    bundle = bundle or {}
    events = [e["resource"] for e in bundle.get("entry") or [] if "resource" in e]
    for app in apps:
        app["form_id"] = new_form_id()
    errors = dict(errors or {})
    for key in [k for k in errors if k != "_page" and k not in names]:
        errors["_page"] = errors.pop(key)  # the app is gone from the list: say it on top
    notice = session.pop("privacy_notice", None)
    return render_template(
        "privacy.html", apps=apps, rows=log_rows(events, patient_id(), names, t),
        older=older_than(bundle), newer=before is not None, errors=errors,
        notice=notice, apps_failed=apps_failed, log_failed=log_failed), status


@bp.get("/privacy")
@signed_in
def privacy():
    return _page()


@bp.post("/privacy/remove")
@signed_in
def privacy_remove():
    """Remove an app's access: first a confirm step, then `$revoke-app`."""
    client = request.form.get("client", "")
    if not _CLIENT.match(client):
        return _page({"_page": t("privacy.err_unknown")}, status=400)
    if not use_form_id(request.form.get("form_id", "")):
        return _page({client: t("privacy.err_twice")}, status=409)
    app = next((a for a in _apps() if a.get("client") == client), None)
    if app is None:
        return _page({"_page": t("privacy.err_unknown")}, status=404)
    if request.form.get("confirm") != "yes":
        return render_template("privacy_confirm.html", app=app, form_id=new_form_id())
    try:
        api().post_operation(f"Patient/{patient_id()}/$revoke-app",
                             [{"name": "client", "valueString": client}])
    except GatewayError as exc:
        if exc.status == 404:
            return _page({"_page": t("privacy.err_unknown")}, status=404)
        if exc.status in (400, 403, 422):
            return _page({client: t("privacy.err_refused", reason=exc.text)}, status=422)
        raise
    log.info("app access removed: status 200")
    if app["this"]:
        # this website's own tokens are revoked now: the session cannot go on
        state().store.drop(session.get("sid"))
        reset_session(notice="privacy.removed_self")
        return redirect(url_for("portal.signin_page"), code=303)
    session["privacy_notice"] = app["label"]
    return redirect(url_for("portal.privacy"), code=303)
