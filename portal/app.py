"""`create_portal(settings)`: the patient portal as a Flask app, a SMART app of a FHIR server.

It talks to the server only over HTTP; it imports nothing from the gateway's packages, so it
works against any SMART server that offers the same operations.
"""

from __future__ import annotations

import importlib
import logging
from urllib.parse import urlsplit

import httpx
from flask import Flask, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect

from portal.blueprint import PortalState, bp, current, language, nav, t
from portal.fhir_api import GatewayError, SessionEnded
from portal.messages import LANGUAGES
from portal.sessions import SessionStore
from portal.settings import PortalSettings

log = logging.getLogger("portal")
#: The modules that hold the portal's pages, one per part of the site.
VIEW_MODULES = (
    "portal.auth",
    "portal.pages",
    "portal.preferences",
    "portal.prescriptions",
    "portal.inbox",
    "portal.learn",
    "portal.privacy",
    "portal.trackers",
    "portal.billing",
    "portal.appointments",
)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(settings: PortalSettings) -> str:
    """No inline script or style, nothing from elsewhere; forms may post (and be redirected)
    only here and to the SMART server's sign-in pages."""
    return ("default-src 'none'; style-src 'self'; img-src 'self'; "
            f"form-action 'self' {_origin(settings.fhir_base)}; frame-ancestors 'none'; "
            "base-uri 'none'")


def create_portal(settings: PortalSettings) -> Flask:
    """The portal app for one SMART server and one registered client."""
    for name in VIEW_MODULES:  # each registers its views on the blueprint
        importlib.import_module(name)

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_NAME="portal_session",  # the SMART server may share the host
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",  # sent on the server's redirect back to /callback
        SESSION_COOKIE_SECURE=settings.cookies_secure,
        PERMANENT_SESSION_LIFETIME=settings.absolute_timeout,
        WTF_CSRF_TIME_LIMIT=settings.absolute_timeout,
        WTF_CSRF_SSL_STRICT=settings.cookies_secure,
        # forms are small; a message may carry one attachment (plus its form fields)
        MAX_CONTENT_LENGTH=64 * 1024 + settings.max_attachment_bytes,
    )
    app.extensions["portal"] = PortalState(
        settings, SessionStore(settings.idle_timeout, settings.absolute_timeout))
    CSRFProtect(app)
    app.register_blueprint(bp)
    csp = content_security_policy(settings)

    @app.context_processor
    def _template_globals() -> dict:
        entry = current()
        return {"t": t, "lang": language(), "languages": LANGUAGES,
                "large_text": bool(session.get("large")), "signed_in": entry is not None,
                "banner": (entry.data.get("banner") if entry else None),
                "nav": nav() if entry is not None else []}

    @app.after_request
    def _security_headers(resp):
        resp.headers["Content-Security-Policy"] = csp
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        resp.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        if settings.cookies_secure:
            resp.headers["Strict-Transport-Security"] = "max-age=31536000"
        if not request.path.startswith("/static/"):
            resp.headers["Cache-Control"] = "no-store"  # pages carry health data
        return resp

    @app.errorhandler(CSRFError)
    def _csrf_error(exc: CSRFError):
        return render_template("error.html", message=t("error.csrf")), 400

    @app.errorhandler(SessionEnded)
    def _session_ended(exc: SessionEnded):
        app.extensions["portal"].store.drop(session.pop("sid", None))
        session["notice"] = "signin.expired"
        return redirect(url_for("portal.signin_page"))

    @app.errorhandler(GatewayError)
    @app.errorhandler(httpx.HTTPError)
    def _gateway_error(exc: Exception):
        log.warning("gateway call failed: %s", type(exc).__name__)
        return render_template("error.html", message=t("error.gateway")), 502

    @app.errorhandler(404)
    def _not_found(exc):
        return render_template("error.html", message=t("error.not_found")), 404

    return app
