"""The SMART HTTP endpoints besides authorize: token, introspection, revocation, JWKS, style,
and discovery under the FHIR base."""

from __future__ import annotations

import re
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, jsonify, request

from smart_launch.access_token import TokenError
from smart_launch.discovery import openid_configuration, smart_configuration
from smart_launch.scopes import parse_scopes

bp = Blueprint("smart_endpoints", __name__)
discovery_bp = Blueprint("smart_discovery", __name__)


def _smart():
    return current_app.extensions["smart"]


@bp.post("/token")
def token() -> Response:
    return _smart().oauth.create_token_response()


@bp.post("/introspect")
def introspect() -> Response:
    return _smart().oauth.create_endpoint_response("introspection")


@bp.post("/revoke")
def revoke() -> Response:
    return _smart().oauth.create_endpoint_response("revocation")


@bp.get("/jwks")
def jwks() -> Response:
    resp = jsonify(_smart().keys.jwks())
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp


@bp.get("/smart-style.json")
def style() -> Response:
    return jsonify({"color_background": "#f7f7f7", "color_highlight": "#0b4f8a",
                    "color_modal_backdrop": "", "color_shadow": "", "dim_border_radius": "8px",
                    "dim_font_size": "18px", "dim_spacing_size": "16px",
                    "font_family_body": "system-ui, sans-serif",
                    "font_family_heading": "system-ui, sans-serif"})


@discovery_bp.get("/.well-known/smart-configuration")
def smart_config() -> Response:
    return jsonify(smart_configuration(_smart().endpoints))


@discovery_bp.get("/.well-known/openid-configuration")
def openid_config() -> Response:
    return jsonify(openid_configuration(_smart().endpoints))


@bp.post("/launch")
def launch() -> Response:
    """Create an EHR launch context, as an EHR does when a clinician opens an app.

    Needs a bearer token of a practitioner (`user/` scopes, fhirUser Practitioner) or a backend
    service (`system/` scopes). Body (form or JSON): client_id, patient, encounter (optional).
    Answers the app's launch URL with `iss` and `launch`.
    """
    smart = _smart()
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    try:
        claims = smart.verifier.verify(token).claims if token else None
    except TokenError:
        claims = None
    if claims is None:
        return _oauth_error(401, "invalid_token", "A valid bearer token is needed.")
    scopes = parse_scopes(claims.get("scope", ""))
    practitioner = str(claims.get("fhirUser", "")).startswith("Practitioner/") and any(
        g.context == "user" for g in scopes.grants)
    if not (practitioner or any(g.context == "system" for g in scopes.grants)):
        return _oauth_error(403, "insufficient_scope",
                            "Only a practitioner or a backend service may create launches.")
    data = request.get_json(silent=True) or request.form
    client = smart.clients.get(data.get("client_id"))
    patient = data.get("patient")
    if client is None or not patient or not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", patient):
        return _oauth_error(400, "invalid_request", "client_id and patient are required.")
    encounter = data.get("encounter") or None
    launch_id = smart.records.create_launch(client.client_id, patient, encounter)
    target = client.launch_uri or client.redirect_uris[0]
    sep = "&" if "?" in target else "?"
    iss = smart.audience
    smart.audit("launch", "allowed", client_id=client.client_id, patient=patient,
                user=claims.get("fhirUser") or claims.get("sub"))
    return jsonify({"launch": launch_id, "iss": iss,
                    "launch_url": f"{target}{sep}{urlencode({'iss': iss, 'launch': launch_id})}"})


def _oauth_error(status: int, error: str, description: str) -> Response:
    resp = jsonify({"error": error, "error_description": description})
    resp.status_code = status
    return resp
