"""The SMART HTTP endpoints besides authorize: token, introspection, revocation, JWKS, style,
and discovery under the FHIR base."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from smart_launch.discovery import openid_configuration, smart_configuration

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
