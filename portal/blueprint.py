"""The portal's one blueprint and what its views share: settings, sessions, the signed-in
patient's FHIR client, the message catalogue."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps

import httpx
from flask import Blueprint, current_app, g, redirect, session, url_for

from portal import smart
from portal.fhir_api import FhirApi, GatewayError
from portal.messages import LANGUAGES, translate
from portal.sessions import PortalSession, SessionStore
from portal.settings import PortalSettings

# The main menu in the order patients see it: (view endpoint, catalogue key). A part shows only
# once its view is registered, so the menu never links to a page that does not exist.
NAV = (
    ("portal.home", "nav.home"),
    ("portal.record", "nav.record"),
    ("portal.appointments", "nav.appointments"),
    ("portal.prescriptions", "nav.prescriptions"),
    ("portal.messages", "nav.messages"),
    ("portal.billing", "nav.billing"),
    ("portal.trackers", "nav.trackers"),
    ("portal.learn", "nav.learn"),
    ("portal.privacy", "nav.privacy"),
)

bp = Blueprint("portal", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static")


@dataclass
class PortalState:
    """Per-app objects (no globals): the settings and the server-side session store."""

    settings: PortalSettings
    store: SessionStore


def nav() -> list[tuple[str, str]]:
    """The menu entries whose pages exist in this app."""
    return [(endpoint, key) for endpoint, key in NAV if endpoint in current_app.view_functions]


def state() -> PortalState:
    return current_app.extensions["portal"]


def language() -> str:
    """The chosen language (session preference), else the portal's default."""
    lang = session.get("lang") or state().settings.language
    return lang if lang in LANGUAGES else "en"


def t(key: str, **values: object) -> str:
    """A catalogue string in the current language."""
    return translate(language(), key, **values)


def current() -> PortalSession | None:
    """The signed-in session of this request, or None (expired ones are revoked and dropped)."""
    if "portal_session" in g:
        return g.portal_session
    entry, expired = state().store.get(session.get("sid"))
    if expired is not None:
        smart.revoke(state().settings, expired.fhir_state)
        session.pop("sid", None)
        g.session_expired = True
    g.portal_session = entry if entry is not None and entry.signed_in else None
    return g.portal_session


def api() -> FhirApi:
    """A FHIR client with the signed-in patient's token, closed at the end of the request."""
    if "fhir_api" not in g:
        entry = current()
        assert entry is not None and entry.fhir_state is not None
        g.fhir_api = FhirApi(state().settings.fhir_base, smart.access_token(entry.fhir_state),
                             renew=lambda failed: _renew(entry, failed))
    return g.fhir_api


def _renew(entry: PortalSession, failed: str) -> str | None:
    """Refresh the session's token (the server said 401 to `failed`); None when it cannot be.

    One refresh at a time per session: refresh tokens rotate, and the server treats a second
    use of a rotated one as theft (it revokes the whole grant). A request that waited for
    another's refresh just takes the new token."""
    with entry.lock:
        now = smart.access_token(entry.fhir_state or {})
        if now and now != failed:
            return now
        try:
            entry.fhir_state = smart.refresh(entry.fhir_state or {})
        except smart.LaunchFailed:
            return None
        return smart.access_token(entry.fhir_state)


def patient_id() -> str:
    entry = current()
    return smart.patient_id(entry.fhir_state) if entry and entry.fhir_state else ""


def signed_in(view):
    """Send visitors who are not signed in (or whose session ran out) to the sign-in page."""
    @wraps(view)
    def wrapper(*args, **kwargs):
        if current() is None:
            if g.get("session_expired"):
                session["notice"] = "signin.expired"
            return redirect(url_for("portal.signin_page"))
        return view(*args, **kwargs)
    return wrapper


@bp.teardown_app_request
def _close_api(exc: BaseException | None) -> None:
    client = g.pop("fhir_api", None)
    if client is not None:
        client.close()


def busy_page(render: Callable[[], object], failed: GatewayError):
    """The form again, with what was typed and a message that nothing was sent, when the
    gateway held the change back (503 marked `held-back`: earlier changes still wait, and
    nothing was sent, so trying again cannot double it). Any other failure, where the change
    may have reached the EHR, and a form whose own page cannot be read either, give the
    error page the failure would have given."""
    if "held-back" not in failed.codes:
        raise failed
    try:
        return render()
    except (GatewayError, httpx.HTTPError):
        raise failed from None
