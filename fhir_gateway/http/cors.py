"""CORS for browser SMART apps: only the origins of registered redirect URIs are answered.

Discovery, metadata, the token, introspection and revocation endpoints and the whole FHIR API
send CORS headers (preflight included) to those origins; any other origin gets none, so its
browser refuses to hand the response to the page.
"""

from __future__ import annotations

import time

from flask import Flask, Response, request

PATHS = ("/fhir", "/auth/token", "/auth/introspect", "/auth/revoke", "/auth/jwks")
ORIGINS_TTL = 10.0
ALLOW_HEADERS = "Authorization, Content-Type, Accept, If-Match, If-None-Exist, If-None-Match, " \
                "Prefer, X-Request-Id"
EXPOSE_HEADERS = "Location, ETag, Last-Modified, Content-Location, X-Request-Id, " \
                 "WWW-Authenticate"


def install_cors(app: Flask, clients) -> None:
    cache: dict[str, tuple[float, set[str]]] = {}

    def allowed(origin: str) -> bool:
        now = time.monotonic()
        stamp, origins = cache.get("o", (0.0, set()))
        if now - stamp > ORIGINS_TTL:
            origins = clients.origins()
            cache["o"] = (now, origins)
        return origin.lower() in origins

    def applies() -> bool:
        return request.path.startswith(PATHS)

    @app.before_request
    def preflight() -> Response | None:
        if request.method != "OPTIONS" or not applies():
            return None
        resp = Response(status=204)
        origin = request.headers.get("Origin", "")
        if origin and allowed(origin):
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE, OPTIONS"
            resp.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            resp.headers["Access-Control-Max-Age"] = "600"
            resp.headers["Vary"] = "Origin"
        return resp

    @app.after_request
    def headers(resp: Response) -> Response:
        origin = request.headers.get("Origin", "")
        if origin and applies() and allowed(origin):
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
            resp.headers.add("Vary", "Origin")
        return resp
