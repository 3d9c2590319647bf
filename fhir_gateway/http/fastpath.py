"""The fast path: FHIR reads and searches (`GET [base]/Type/id`, `GET [base]/Type?...`) served
straight from WSGI, without Flask's request machinery (contexts, hooks, signals, dispatch).

Reads are most of what a portal asks. They go through the same functions as the blueprint's
views and hooks (`fhir_gateway.http.exchange`): the same token check, access decision, service
call, shaping, rendering, access-log entry and log line. Routing is Flask's own URL map, asked
once per path: only paths that Flask would send to the `read` and `search-type` views are
taken, so every other route (AuditEvent, operations, history, OperationDefinition, ...) keeps
its view. Requests with an `Origin` (CORS) and other methods go to Flask; so does a request
whose handling raises something other than a FHIR error before the service is asked (nothing
happened for it yet: Flask serves it from the start, with its handlers). An unexpected error
after that is a 500 here, the answer Flask's handler gives, so the EHR is never asked twice.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

from flask import Flask, Request, Response
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from adapters.errors import FhirError
from fhir_gateway.http.binary import reads_binary
from fhir_gateway.http.exchange import (
    Exchange,
    base_url,
    begin,
    end,
    error_response,
    fhir_request,
    internal_error,
    present,
)
from fhir_gateway.http.negotiation import response_mimetype

# Flask endpoint -> the FHIR interaction its GET serves
ENDPOINTS = {"fhir.instance": "read", "fhir.type_level": "search-type"}

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]
MAX_REMEMBERED_PATH = 200  # characters


class FastReads:
    """WSGI middleware in front of the Flask app's own `wsgi_app` (Flask's documented way to
    wrap it); `served` counts the requests it answered itself."""

    def __init__(self, app: Flask, wsgi_app: WsgiApp) -> None:
        self.app = app
        self.next = wsgi_app
        self.gateway = app.extensions["fhir_gateway"]
        self.urls = app.url_map.bind("localhost")  # no host matching: the path decides
        # path -> route or None; lru_cache is thread-safe (gthread workers share this object)
        self._route = functools.lru_cache(maxsize=2048)(self._match)
        self.served = 0

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "GET" or "HTTP_ORIGIN" in environ:
            return self.next(environ, start_response)
        # PATH_INFO is the path's bytes as latin-1 (WSGI); decoded as UTF-8, as Flask does.
        path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
        # Remembered per path, except long ones (a flood of those would only fill memory).
        route = self._route(path) if len(path) <= MAX_REMEMBERED_PATH else self._match(path)
        if route is None:
            return self.next(environ, start_response)
        rule, interaction, args = route
        req = self.app.request_class(environ)
        ex = begin(self.gateway, req)
        resp = self._answer(ex, req, interaction, args)
        if resp is None:
            return self.next(environ, start_response)  # Flask answers it, with its handlers
        self.served += 1
        resp = end(ex, resp, rule)
        if type(resp.response) is not list or resp.status_code < 200 \
                or resp.status_code in (204, 304):
            return resp(environ, start_response)
        # A GET answered with its bytes: the headers werkzeug would send, without its per-call
        # fix-ups for the cases above (about 10 µs a request).
        start_response(resp.status, resp.headers.to_wsgi_list())
        return resp.response

    def _answer(self, ex: Exchange, req: Request, interaction: str,
                args: dict) -> Response | None:
        """The response; FHIR errors as their OperationOutcome. None for an unexpected error
        before the service was asked: Flask serves the request (nothing happened yet). One
        after it is a 500 here, as Flask's handler would answer (the EHR is not asked twice)."""
        try:
            freq = fhir_request(ex, interaction, args.get("rtype"), args.get("id"))
            mimetype = response_mimetype(req, reads_binary(interaction, freq.resource_type))
        except FhirError as exc:
            return error_response(exc)
        except Exception:  # noqa: BLE001
            return None
        try:
            return present(ex, self.gateway.service.handle(freq, base_url(ex)), freq, mimetype)
        except FhirError as exc:
            return error_response(exc)
        except Exception:  # noqa: BLE001 - logged with its traceback
            return internal_error(ex.request_id)

    def _match(self, path: str) -> tuple[str, str, dict] | None:
        """(rule, interaction, view args) when Flask's map sends a GET of `path` to a view
        the fast path serves; None otherwise (Flask routes it, redirects or refuses it)."""
        if not path.startswith("/fhir/"):
            return None
        try:
            rule, args = self.urls.match(path, method="GET", return_rule=True)
        except (HTTPException, RequestRedirect):
            return None
        interaction = ENDPOINTS.get(rule.endpoint)
        return (rule.rule, interaction, args) if interaction else None
