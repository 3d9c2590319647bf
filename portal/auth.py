"""Sign in (standalone and EHR launch), the SMART callback, sign out."""

from __future__ import annotations

import logging

from flask import redirect, render_template, request, session, url_for

from portal import smart
from portal.blueprint import bp, current, state
from portal.fhir_api import FhirApi, GatewayError
from portal.records import day, patient_name

log = logging.getLogger("portal.auth")


def reset_session(**values: str) -> None:
    """Empty the cookie session (CSRF token included) but keep the display preferences."""
    prefs = {k: session[k] for k in ("lang", "large") if k in session}
    session.clear()
    session.update(prefs, **values)


@bp.get("/")
def index():
    if current() is None:
        return redirect(url_for("portal.signin_page"))
    return redirect(url_for("portal.home"))


@bp.get("/signin")
def signin_page():
    """The sign-in page: one big button that starts the SMART standalone launch."""
    if current() is not None:
        return redirect(url_for("portal.home"))
    notice = session.pop("notice", None)
    return render_template("signin.html", notice=notice)


def _begin(launch_token: str | None):
    settings, store = state().settings, state().store
    previous = store.drop(session.pop("sid", None))
    if previous is not None and previous.signed_in:
        smart.revoke(settings, previous.fhir_state)
    try:
        fhir_state, url = smart.start_launch(settings, launch_token)
    except smart.LaunchFailed as exc:
        log.warning("launch could not start: %s", exc)
        session["notice"] = "signin.failed"
        return redirect(url_for("portal.signin_page"))
    sid, entry = store.create()
    entry.fhir_state = fhir_state
    session["sid"] = sid
    return redirect(url, code=303)


@bp.post("/signin")
def signin():
    """Start a standalone launch (the form carries only the CSRF token)."""
    return _begin(None)


@bp.get("/launch")
def launch():
    """EHR launch: the SMART server sends `iss` and `launch`; only our own server is trusted."""
    iss, token = request.args.get("iss", ""), request.args.get("launch", "")
    if iss.rstrip("/") != state().settings.fhir_base.rstrip("/") or not token:
        session["notice"] = "signin.launch_refused"
        return redirect(url_for("portal.signin_page"))
    return _begin(token)


@bp.get("/callback")
def callback():
    """The SMART server's redirect back: check state, exchange the code, start the session."""
    settings, store = state().settings, state().store
    pending, _ = store.get(session.get("sid"))
    if pending is None or pending.signed_in or pending.fhir_state is None:
        session["notice"] = "signin.failed"
        return redirect(url_for("portal.signin_page"))
    try:
        fhir_state = smart.finish_launch(pending.fhir_state, request.url)
    except smart.LaunchFailed as exc:
        log.warning("launch failed: %s", exc)
        store.drop(session.pop("sid", None))
        session["notice"] = "signin.failed"
        return redirect(url_for("portal.signin_page"))
    store.drop(session.pop("sid", None))
    sid, entry = store.create()  # a new id once signed in: no session fixation
    entry.fhir_state, entry.signed_in = fhir_state, True
    pid = smart.patient_id(fhir_state)
    api = FhirApi(settings.fhir_base, smart.access_token(fhir_state))
    try:
        patient = api.read("Patient", pid)
        entry.data["name"] = patient_name(patient)
        if smart.launch_context(fhir_state).get("need_patient_banner"):
            entry.data["banner"] = {"name": entry.data["name"],
                                    "born": day(patient.get("birthDate"))}
    except GatewayError as exc:
        log.warning("patient read after sign-in failed: %s", exc.status)
        entry.data["name"] = ""
    finally:
        api.close()
    reset_session(sid=sid)
    return redirect(url_for("portal.home"))


@bp.post("/signout")
def signout():
    """Revoke the token at the server and forget the session."""
    entry = state().store.drop(session.get("sid"))
    if entry is not None:
        smart.revoke(state().settings, entry.fhir_state)
    reset_session(notice="signin.signed_out")
    return redirect(url_for("portal.signin_page"))
