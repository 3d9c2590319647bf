"""Servers for the conformance runner's tests: the real gateway (SMART on, 3 seeded patients)
served on loopback behind a WSGI middleware that breaks the rules it is told to, one or a few
independent ones at a time.

    gw = start_breakable_gateway(tmp_dir)
    gw.breaker.rule = "paging-repeats"     # None: the gateway as it is
    gw.breaker.rule = ("format-xml-only", "no-oauth-uris")   # two at once
    run(options_for(gw, groups=["search"]))
    gw.stop()
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import orjson

from tests.conftest import LiveGateway, serve_app
from tests.smart_support import PASSWORD, REDIRECT, smart_env_for

CONFIDENTIAL_SECRET = "conformance-secret-0123456789"
FIXED_VERIFIER = "conformance-breaker-fixed-verifier-" + "v" * 20
FIXED_CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(FIXED_VERIFIER.encode()).digest()) \
    .rstrip(b"=").decode()
COMPARTMENT_TYPES = "Observation|Condition|MedicationRequest|Encounter|AllergyIntolerance|" \
    "Immunization"


def _outcome(code: str, diagnostics: str) -> bytes:
    return orjson.dumps({"resourceType": "OperationOutcome", "issue": [{
        "severity": "error", "code": code, "diagnostics": diagnostics}]})


def _reply(start_response, status: str, headers: list[tuple[str, str]],
           body: bytes) -> list[bytes]:
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
    start_response(status, headers + [("Content-Length", str(len(body)))])
    return [body]


class Breaker:
    """WSGI middleware in front of the gateway; `rule` names the rule (or rules) it breaks."""

    RULES = ("wrong-content-type", "no-outcome", "paging-repeats", "ignore-if-match",
             "plain-pkce", "cross-patient-read", "param-501", "ignored-param", "etag-mismatch",
             "no-cors", "invalid-resource", "wrong-aud-accepted", "token-cacheable",
             "revocation-ignored", "accepts-invalid", "cancel-keeps-slot",
             "backend-replay-accepted", "etag-missing", "summary-count-wrong",
             "date-prefix-ignored", "include-leaks", "no-token-accepted", "sort-ignored",
             "post-search-ignores-count", "r5-version", "format-xml-only", "no-oauth-uris",
             "rest-client-mode", "strict-ignored", "discovery-incomplete",
             "discovery-offers-plain", "cross-patient-data-read", "cross-patient-write",
             "op-definition-missing", "medication-history-leaks", "refill-task-unfocused",
             "unread-not-parameters", "statement-empty", "statement-undated", "history-501",
             "read-drops-id", "vread-404", "history-as-searchset", "create-no-location",
             "version-not-bumped", "if-none-exist-ignored", "stale-after-delete",
             "junk-token-accepted", "verifier-ignored", "refresh-widens",
             "introspect-junk-active", "backend-token-long", "subject-search-leaks",
             "implausible-reading-accepted", "small-count-ignored", "token-system-ignored",
             "lenient-silent", "metadata-as-bundle", "bare-id-reference-ignored",
             "include-adds-nothing")

    def __init__(self, app, admin_token: Callable[[], str]) -> None:
        self.app = app
        self.rules: frozenset[str] = frozenset()
        self.admin_token = admin_token
        self._pending: dict[str, dict] = {}  # paging-repeats: next URL -> last entry seen
        self._lock = threading.Lock()

    @property
    def rule(self) -> str | None:
        return None if not self.rules else ", ".join(sorted(self.rules))

    @rule.setter
    def rule(self, value: str | Iterable[str] | None) -> None:
        rules = frozenset([value] if isinstance(value, str) else value or ())
        unknown = rules - set(self.RULES)
        assert not unknown, f"no such rule: {sorted(unknown)}"
        self.rules = rules

    # -- helpers -----------------------------------------------------------------------

    def _call(self, environ, start_response=None) -> tuple[str, list[tuple[str, str]], bytes]:
        captured: dict = {}

        def start(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, list(headers)
            return lambda data: None

        chunks = self.app(environ, start)
        try:
            body = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        return captured["status"], captured["headers"], body

    @staticmethod
    def _set_query(environ, pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Rewrite the query; the new pairs, for the next rule to rewrite further."""
        pairs = list(pairs)
        if pairs != parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True):
            environ["QUERY_STRING"] = urlencode(pairs)  # untouched when nothing changed
        return pairs

    # -- the middleware ----------------------------------------------------------------

    def __call__(self, environ, start_response):
        rules, path, method = self.rules, environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if "ignore-if-match" in rules and method == "PUT":
            environ.pop("HTTP_IF_MATCH", None)
        if "plain-pkce" in rules and path.endswith("/auth/authorize") and \
                dict(query).get("code_challenge_method") == "plain":
            # Accept plain by storing S256(challenge): the plain verifier then matches.
            challenge = dict(query)["code_challenge"]
            s256 = base64.urlsafe_b64encode(hashlib.sha256(challenge.encode()).digest())
            query = self._set_query(environ, [
                (k, "S256" if k == "code_challenge_method" else s256.rstrip(b"=").decode()
                 if k == "code_challenge" else v) for k, v in query])
        if "wrong-aud-accepted" in rules and path.endswith("/auth/authorize"):
            base = f"http://{environ['HTTP_HOST']}/fhir"
            query = self._set_query(environ, [(k, base if k == "aud" else v) for k, v in query])
        if "cross-patient-read" in rules and method == "GET" and \
                re.fullmatch(r"/fhir/Patient/[^/$]+", path):
            environ["HTTP_AUTHORIZATION"] = f"Bearer {self.admin_token()}"
        if "param-501" in rules and method == "GET" and path == "/fhir/Observation" and \
                any(k == "code" for k, _ in query):
            body = orjson.dumps({"resourceType": "OperationOutcome", "issue": [{
                "severity": "error", "code": "not-supported",
                "diagnostics": "search by code is not implemented"}]})
            return _reply(start_response, "501 Not Implemented",
                          [("Content-Type", "application/fhir+json")], body)
        if "ignored-param" in rules and path == "/fhir/Patient" and method == "GET":
            query = self._set_query(environ, [(k, v) for k, v in query if k != "gender"])
        if "revocation-ignored" in rules and path.endswith("/auth/revoke"):
            return _reply(start_response, "200 OK", [("Content-Type", "application/json")],
                          b"{}")
        if "date-prefix-ignored" in rules:
            query = self._set_query(environ, [
                (k, re.sub(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)(\d)", r"\2", v)
                 if k in ("date", "birthdate") else v) for k, v in query])
        if "sort-ignored" in rules:
            query = self._set_query(environ, [(k, v) for k, v in query if k != "_sort"])
        if "no-token-accepted" in rules and path.startswith("/fhir/") and \
                "HTTP_AUTHORIZATION" not in environ:
            environ["HTTP_AUTHORIZATION"] = f"Bearer {self.admin_token()}"
        if "post-search-ignores-count" in rules and method == "POST" and \
                path.endswith("/_search"):
            raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            kept = urlencode([(k, v) for k, v in parse_qsl(raw.decode()) if k != "_count"])
            environ["wsgi.input"] = io.BytesIO(kept.encode())
            environ["CONTENT_LENGTH"] = str(len(kept))
        if "backend-replay-accepted" in rules and method == "POST" and \
                path.endswith("/auth/token"):
            return self._forget_jti(environ, start_response)
        if "accepts-invalid" in rules and method == "POST" and path == "/fhir/Observation":
            return self._accept_anything(environ, start_response)
        if "strict-ignored" in rules and method == "GET":
            environ.pop("HTTP_PREFER", None)  # handling=strict read as lenient
        if "cross-patient-data-read" in rules and method == "GET" and re.fullmatch(
                rf"/fhir/({COMPARTMENT_TYPES})/[^_/$][^/$]*(/_history(/[^/]+)?)?", path):
            environ["HTTP_AUTHORIZATION"] = f"Bearer {self.admin_token()}"
        if "cross-patient-write" in rules and method in ("POST", "PUT", "DELETE") and \
                re.fullmatch(r"/fhir/Observation(/[^_/$][^/$]*)?", path):
            environ["HTTP_AUTHORIZATION"] = f"Bearer {self.admin_token()}"
        if "history-501" in rules and method == "GET" and \
                re.fullmatch(r"/fhir/Patient/[^/]+/_history", path):
            return _reply(start_response, "501 Not Implemented",
                          [("Content-Type", "application/fhir+json")],
                          _outcome("not-supported", "history is not implemented"))
        if "vread-404" in rules and method == "GET" and \
                re.fullmatch(r"/fhir/[A-Za-z]+/[^/]+/_history/[^/]+", path):
            return _reply(start_response, "404 Not Found",
                          [("Content-Type", "application/fhir+json")],
                          _outcome("not-found", "no such version"))
        if "if-none-exist-ignored" in rules:
            environ.pop("HTTP_IF_NONE_EXIST", None)
        if "stale-after-delete" in rules:
            stale = self._stale_after_delete(environ, path, method)
            if stale is not None:
                return _reply(start_response, "200 OK",
                              [("Content-Type", "application/fhir+json")], stale)
        if "junk-token-accepted" in rules and path.startswith("/fhir/"):
            token = environ.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")
            parts = token.split(".")
            if token and (len(parts) != 3 or not all(parts)):  # not a signed JWT
                environ["HTTP_AUTHORIZATION"] = f"Bearer {self.admin_token()}"
        if "verifier-ignored" in rules and path.endswith("/auth/authorize") and \
                dict(query).get("code_challenge_method") == "S256":
            query = self._set_query(environ, [
                (k, FIXED_CHALLENGE if k == "code_challenge" else v) for k, v in query])
        if "subject-search-leaks" in rules and method == "GET" and \
                path == "/fhir/Observation" and any(k == "subject" for k, _ in query):
            environ["HTTP_AUTHORIZATION"] = f"Bearer {self.admin_token()}"
        if "small-count-ignored" in rules and method == "GET":  # pages of at least 10
            query = self._set_query(environ, [
                (k, "10" if k == "_count" and v.isdigit() and 0 < int(v) < 10 else v)
                for k, v in query])
        if "token-system-ignored" in rules and method == "GET":
            query = self._set_query(environ, [
                (k, v.split("|", 1)[1] if k in ("code", "identifier") and "|" in v else v)
                for k, v in query])
        if method == "POST" and path.endswith("/auth/token") and rules & {
                "verifier-ignored", "refresh-widens", "backend-token-long"}:
            return self._token_endpoint(rules, environ, start_response)
        if "implausible-reading-accepted" in rules and method == "POST" and \
                path == "/fhir/Observation/$record-reading":
            return self._accept_reading(environ, start_response)
        if "metadata-as-bundle" in rules and path == "/fhir/metadata":
            # /metadata served as a search of a type called "metadata"
            return _reply(start_response, "200 OK", [("Content-Type", "application/fhir+json")],
                          orjson.dumps({"resourceType": "Bundle", "type": "searchset",
                                        "total": 0, "entry": []}))
        if "bare-id-reference-ignored" in rules and method == "GET":
            # patient=[id] matches nothing: only the Type/id form is understood
            query = self._set_query(environ, [
                (k, "Patient/conformance-none" if k in ("patient", "subject") and "/" not in v
                 else v) for k, v in query])
        if "op-definition-missing" in rules and \
                path == "/fhir/OperationDefinition/Observation-stats":
            return _reply(start_response, "404 Not Found",
                          [("Content-Type", "application/fhir+json")], _outcome(
                              "not-found", "OperationDefinition/Observation-stats"))

        status, headers, body = self._call(environ)
        code = int(status.split()[0])
        ctype = next((v for k, v in headers if k.lower() == "content-type"), "")

        if "wrong-content-type" in rules and code < 400 and "json" in ctype:
            headers = [(k, "text/html; charset=utf-8" if k.lower() == "content-type" else v)
                       for k, v in headers]
        if "no-outcome" in rules and code >= 400 and path.startswith("/fhir"):
            headers = [(k, "text/plain" if k.lower() == "content-type" else v)
                       for k, v in headers]
            body = status.encode()
        if "etag-mismatch" in rules:
            headers = [(k, 'W/"999"' if k.lower() == "etag" else v) for k, v in headers]
        if "no-cors" in rules:
            headers = [(k, v) for k, v in headers if not k.lower().startswith("access-control")]
        if "token-cacheable" in rules and path.endswith("/auth/token"):
            headers = [(k, v) for k, v in headers if k.lower() not in ("cache-control",
                                                                        "pragma")]
        if "invalid-resource" in rules and code == 200 and re.fullmatch(r"/fhir/Patient/[^/]+",
                                                                       path):
            res = orjson.loads(body)
            res["gender"] = "xyz"
            res["birthDate"] = "the fifth of May"
            body = orjson.dumps(res)
        if "etag-missing" in rules:
            headers = [(k, v) for k, v in headers if k.lower() != "etag"]
        if "r5-version" in rules and path == "/fhir/metadata" and code == 200:
            res = orjson.loads(body)
            res["fhirVersion"] = "5.0.0"
            body = orjson.dumps(res)
        if path == "/fhir/metadata" and code == 200 and rules & {
                "format-xml-only", "no-oauth-uris", "rest-client-mode", "statement-undated"}:
            body = self._break_statement(rules, body)
        if path == "/fhir/.well-known/smart-configuration" and code == 200:
            conf = orjson.loads(body)
            if "discovery-incomplete" in rules:
                del conf["grant_types_supported"]
            if "discovery-offers-plain" in rules:
                conf["code_challenge_methods_supported"] = ["S256", "plain"]
            body = orjson.dumps(conf)
        if "medication-history-leaks" in rules and code == 200 and \
                path == "/fhir/MedicationRequest/$medication-history":
            body = self._add_everyones(body, "MedicationRequest")
        if "refill-task-unfocused" in rules and code in (200, 201) and \
                re.fullmatch(r"/fhir/MedicationRequest/[^/]+/\$refill-request", path):
            task = orjson.loads(body)
            task.pop("focus", None)
            body = orjson.dumps(task)
        if "unread-not-parameters" in rules and code == 200 and \
                path == "/fhir/Communication/$unread":
            params = orjson.loads(body).get("parameter") or [{}]
            body = orjson.dumps({"unread": params[0].get("valueInteger", 0)})
            headers = [(k, "application/json" if k.lower() == "content-type" else v)
                       for k, v in headers]
        if "statement-empty" in rules and code == 200 and \
                re.fullmatch(r"/fhir/Account/[^/]+/\$statement", path):
            body = b""
        if "lenient-silent" in rules and code == 200 and method == "GET" and \
                path.startswith("/fhir/") and "json" in ctype and environ.get("QUERY_STRING"):
            body = self._echo_self_link(environ, body)
        if "include-adds-nothing" in rules and code == 200 and \
                any(k == "_include" for k, _ in query):
            res = orjson.loads(body)
            res["entry"] = [e for e in res.get("entry") or []
                            if (e.get("search") or {}).get("mode") != "include"]
            body = orjson.dumps(res)
        if "read-drops-id" in rules and code == 200 and \
                re.fullmatch(r"/fhir/Patient/[^/$]+", path):
            res = orjson.loads(body)
            res.pop("id", None)
            body = orjson.dumps(res)
        if "history-as-searchset" in rules and code == 200 and \
                re.fullmatch(r"/fhir/[A-Za-z]+/[^/]+/_history", path):
            res = orjson.loads(body)
            res["type"] = "searchset"
            body = orjson.dumps(res)
        if "create-no-location" in rules and method == "POST" and code == 201 and \
                path == "/fhir/Observation":
            headers = [(k, v) for k, v in headers if k.lower() != "location"]
        if "version-not-bumped" in rules and method == "GET" and code == 200 and \
                re.fullmatch(r"/fhir/Observation/[^_/$][^/$]*", path):
            res = orjson.loads(body)
            res.setdefault("meta", {})["versionId"] = "1"
            body = orjson.dumps(res)
        if "introspect-junk-active" in rules and path.endswith("/auth/introspect") and \
                code == 200 and orjson.loads(body).get("active") is False:
            body = orjson.dumps({"active": True, "scope": "patient/*.rs",
                                 "client_id": "app-confidential", "exp": 4102444800})
        if "summary-count-wrong" in rules and code == 200 and \
                ("_summary", "count") in query:
            res = orjson.loads(body)
            res["total"] = (res.get("total") or 0) + 1
            body = orjson.dumps(res)
        if "include-leaks" in rules and code == 200 and \
                any(k in ("_include", "_revinclude") for k, _ in query):
            body = self._leak_patients(body)
        if "cancel-keeps-slot" in rules:
            body = self._slot_stays_busy(path, code, body)
        if "paging-repeats" in rules and code == 200 and "json" in ctype:
            body = self._repeat_pages(environ, body)
        return _reply(start_response, status, headers, body)

    def _admin_get(self, path: str, query: str) -> dict:
        """GET on the gateway itself with the admin token (everyone's data)."""
        inner = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query,
                 "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1",
                 "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""),
                 "wsgi.errors": io.StringIO(), "wsgi.version": (1, 0),
                 "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
                 "HTTP_ACCEPT": "application/fhir+json",
                 "HTTP_AUTHORIZATION": f"Bearer {self.admin_token()}"}
        _, _, body = self._call(inner)
        return orjson.loads(body)

    def _leak_patients(self, body: bytes) -> bytes:
        """Includes that add every patient of the clinic, whoever asked."""
        everyone = self._admin_get("/fhir/Patient", "_count=10")
        res = orjson.loads(body)
        extra = [{"resource": e["resource"], "search": {"mode": "include"}}
                 for e in everyone.get("entry") or []]
        res["entry"] = (res.get("entry") or []) + extra
        return orjson.dumps(res)

    def _add_everyones(self, body: bytes, rtype: str) -> bytes:
        """A Bundle that also lists every patient's resources of `rtype` as matches."""
        res = orjson.loads(body)
        have = {(e.get("resource") or {}).get("id") for e in res.get("entry") or []}
        extra = [{"resource": e["resource"], "search": {"mode": "match"}}
                 for e in self._admin_get(f"/fhir/{rtype}", "_count=50").get("entry") or []
                 if e["resource"]["id"] not in have]
        res["entry"] = (res.get("entry") or []) + extra
        return orjson.dumps(res)

    @staticmethod
    def _break_statement(rules: frozenset[str], body: bytes) -> bytes:
        """The CapabilityStatement without json in format, without the oauth-uris extension,
        with its rest entry in client mode, or without its date."""
        cap = orjson.loads(body)
        if "format-xml-only" in rules:
            cap["format"] = ["application/fhir+xml", "xml"]
        if "statement-undated" in rules:
            del cap["date"]
        for rest in cap.get("rest") or []:
            if "rest-client-mode" in rules:
                rest["mode"] = "client"
            security = rest.get("security") or {}
            if "no-oauth-uris" in rules:
                security["extension"] = [e for e in security.get("extension") or []
                                         if not e.get("url", "").endswith("/oauth-uris")]
        return orjson.dumps(cap)

    def _slot_stays_busy(self, path: str, code: int, body: bytes) -> bytes:
        """After a $cancel, the cancelled visit's Slot reads as busy (never freed)."""
        if path.endswith("/$cancel") and code == 200:
            with self._lock:
                self._pending["cancelled"] = True
        elif re.fullmatch(r"/fhir/Slot/[^/]+", path) and code == 200 and \
                self._pending.get("cancelled"):
            res = orjson.loads(body)
            if res.get("status") == "free":
                res["status"] = "busy"
                body = orjson.dumps(res)
        return body

    def _repeat_pages(self, environ, body: bytes) -> bytes:
        """Each next page starts with the last entry of the page before it."""
        res = orjson.loads(body)
        if res.get("resourceType") != "Bundle" or res.get("type") != "searchset":
            return body
        here = f"{environ.get('PATH_INFO')}?{environ.get('QUERY_STRING')}"
        with self._lock:
            carried = self._pending.pop(here, None)
            entries = res.get("entry") or []
            nxt = next((ln["url"] for ln in res.get("link") or []
                        if ln.get("relation") == "next"), None)
            if nxt and entries:
                key = nxt.split("://", 1)[-1]
                key = key[key.index("/"):]
                self._pending[key] = entries[-1]
        if carried:
            res["entry"] = [carried, *(res.get("entry") or [])]
        return orjson.dumps(res)

    @staticmethod
    def _echo_self_link(environ, body: bytes) -> bytes:
        """A searchset whose self link is the request URL, parameters used or not, and with
        no OperationOutcome entry saying what was ignored."""
        res = orjson.loads(body)
        if res.get("resourceType") != "Bundle":
            return body
        res["entry"] = [e for e in res.get("entry") or [] if (e.get("resource") or {})
                        .get("resourceType") != "OperationOutcome"]
        url = f"http://{environ['HTTP_HOST']}{environ['PATH_INFO']}?{environ['QUERY_STRING']}"
        res["link"] = [{"relation": "self", "url": url}] + [
            ln for ln in res.get("link") or [] if ln.get("relation") != "self"]
        return orjson.dumps(res)

    def _stale_after_delete(self, environ, path: str, method: str) -> bytes | None:
        """A cache in front of the store: a deleted resource still reads as it was."""
        if method == "DELETE" and re.fullmatch(r"/fhir/Observation/[^_/$][^/$]*", path):
            copy = self._admin_get(path, "")
            if copy.get("resourceType") == "Observation":
                with self._lock:
                    self._pending[f"deleted:{path}"] = orjson.dumps(copy)
        elif method == "GET":
            with self._lock:
                return self._pending.get(f"deleted:{path}")
        return None

    def _token_endpoint(self, rules: frozenset[str], environ, start_response):
        """The token endpoint, broken: any code_verifier does (verifier-ignored), a refresh
        says it granted whatever was asked (refresh-widens), backend tokens live an hour
        (backend-token-long)."""
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        form = parse_qsl(raw.decode(), keep_blank_values=True)
        grant = dict(form).get("grant_type")
        asked = dict(form).get("scope", "")
        if "verifier-ignored" in rules and grant == "authorization_code":
            form = [(k, v) for k, v in form if k != "code_verifier"] + [
                ("code_verifier", FIXED_VERIFIER)]
        widen = "refresh-widens" in rules and grant == "refresh_token" and "system/" in asked
        if widen:
            form = [(k, v) for k, v in form if k != "scope"]
        raw = urlencode(form).encode()
        environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(raw), str(len(raw))
        status, headers, body = self._call(environ)
        if status.startswith("200") and (widen or grant == "client_credentials" and
                                         "backend-token-long" in rules):
            res = orjson.loads(body)
            if widen:
                res["scope"] = asked
            else:
                res["expires_in"] = 3600
            body = orjson.dumps(res)
        return _reply(start_response, status, headers, body)

    def _accept_reading(self, environ, start_response):
        """$record-reading without a plausibility check: a refused reading is answered 201."""
        status, headers, body = self._call(environ)
        if int(status.split()[0]) not in (400, 422):
            return _reply(start_response, status, headers, body)
        return _reply(start_response, "201 Created", [
            ("Content-Type", "application/fhir+json")], orjson.dumps({
                "resourceType": "Observation", "id": "accepted-reading", "status": "final",
                "subject": {"reference": "Patient/pat-0001"},
                "valueQuantity": {"value": 7000, "unit": "kg"}}))

    def _forget_jti(self, environ, start_response):
        """A token endpoint that does not remember assertion ids: a jti it has already
        answered gets the same token again."""
        import json

        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(raw)
        form = dict(parse_qsl(raw.decode()))
        jti = None
        if form.get("client_assertion", "").count(".") == 2:
            payload = form["client_assertion"].split(".")[1]
            payload += "=" * (-len(payload) % 4)
            jti = json.loads(base64.urlsafe_b64decode(payload)).get("jti")
        with self._lock:
            cached = self._pending.get(f"jti:{jti}") if jti else None
        if cached:
            return _reply(start_response, *cached)
        status, headers, body = self._call(environ)
        if jti and status.startswith("200"):
            with self._lock:
                self._pending[f"jti:{jti}"] = (status, headers, body)
        return _reply(start_response, status, headers, body)

    def _accept_anything(self, environ, start_response):
        """An Observation create that the gateway refuses as invalid is answered 201 anyway
        (as a server that skips validation would); valid ones go through unchanged."""
        status, headers, body = self._call(environ)
        if int(status.split()[0]) not in (400, 422):
            return _reply(start_response, status, headers, body)
        rid = "accepted-" + hashlib.sha256(body).hexdigest()[:12]
        return _reply(start_response, "201 Created", [
            ("Content-Type", "application/fhir+json"),
            ("Location", f"http://{environ['HTTP_HOST']}/fhir/Observation/{rid}")],
            orjson.dumps({"resourceType": "Observation", "id": rid, "status": "not-a-status",
                          "meta": {"versionId": "1"}}))


def add_backend_client(smart, data_dir: Path) -> Path:
    """Register `conformance-backend` (private_key_jwt, RS384); return its private JWK file."""
    import json

    from joserfc.jwk import RSAKey

    key = RSAKey.generate_key(2048, private=True)
    kid = key.thumbprint()
    path = data_dir / "conformance-backend.private.jwk.json"
    path.write_text(json.dumps(dict(key.as_dict(private=True), kid=kid, alg="RS384")))
    public = dict(key.as_dict(private=False), kid=kid, alg="RS384", use="sig")
    smart.clients.add("conformance-backend", "asymmetric", jwks={"keys": [public]},
                      scope="system/*.rs")
    return path


@dataclass
class BreakableGateway:
    live: LiveGateway
    breaker: Breaker
    stop: Callable[[], None]
    smart: object

    @property
    def base(self) -> str:
        return self.live.base


def start_breakable_gateway(data_dir: Path) -> BreakableGateway:
    """The real gateway (embedded store seeded relative to today, SMART on, patients
    ann=pat-0001 and bob=pat-0002, a public app `app-public`, a confidential
    `app-confidential`) behind a Breaker."""
    from adapters.embedded import EmbeddedAdapter
    from fhir_gateway.synthetic import generate

    url = f"sqlite:///{data_dir / 'ehr.sqlite3'}"
    adapter = EmbeddedAdapter(url)
    adapter.load(generate(3, 7, dt.date.today()))  # Slots ahead, for the portal group
    admin: dict[str, str] = {}
    made: dict[str, Breaker] = {}

    def wrap(app) -> Breaker:
        smart = app.extensions["smart"]

        def admin_token() -> str:
            if "token" not in admin:
                admin["token"] = smart.mint(smart.clients.get("conformance-admin"),
                                            "system/*.cruds")
            return admin["token"]

        made["breaker"] = Breaker(app, admin_token)
        return made["breaker"]

    live, stop = serve_app(data_dir, {"FHIR_GATEWAY_EHR_DATABASE_URL": url}, auth=True,
                           store=adapter, adapter=adapter, wrap=wrap)
    smart = live.app.extensions["smart"]
    smart_env_for(live)
    smart.clients.add("app-confidential", "symmetric", secret=CONFIDENTIAL_SECRET,
                      redirect_uris=[REDIRECT])
    smart.clients.add("conformance-admin", "symmetric", secret=CONFIDENTIAL_SECRET,
                      redirect_uris=[REDIRECT], scope="system/*.cruds")
    add_backend_client(smart, data_dir)
    breaker = made["breaker"]
    return BreakableGateway(live, breaker, stop, smart)


def smart_args(gw: BreakableGateway, *, confidential: bool = False) -> list[str]:
    """CLI arguments for a real SMART launch as ann and bob, and the backend client."""
    key = Path(gw.live.config.data_path) / "conformance-backend.private.jwk.json"
    args = ["--base", gw.base, "--redirect-uri", REDIRECT,
            "--patient-login", f"ann:{PASSWORD}", "--patient-login", f"bob:{PASSWORD}",
            "--backend-client", "conformance-backend", "--backend-key", str(key)]
    if confidential:
        return args + ["--smart-client", "app-confidential", "--client-secret",
                       CONFIDENTIAL_SECRET]
    return args + ["--smart-client", "app-public"]


ARTIFACTS = Path(__file__).resolve().parent.parent / "var" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


def render_in_chromium(html_file: Path, screenshot: Path) -> dict:
    """Open a report in headless Chromium (Debian's, through Playwright), keep a full-page
    screenshot, and return what the page shows: its visible text, the requests it made
    beyond the file itself, and the open evidence blocks."""
    import os

    from tests.conftest import skip_or_fail

    if not Path(CHROMIUM).exists():
        skip_or_fail("GATEWAY_REQUIRE_BROWSER", f"{CHROMIUM} is missing "
                     "(apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("GATEWAY_REQUIRE_BROWSER", "playwright is not installed")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    requests: list[str] = []
    import tempfile

    home = tempfile.mkdtemp(prefix="chromium-home-")  # its profile, not the artifacts
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                    env={**os.environ, "HOME": home})
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda req: requests.append(req.url))
            page.goto(html_file.resolve().as_uri())
            page.screenshot(path=str(screenshot), full_page=True)
            shown = {"text": page.inner_text("body"),
                     "requests": [u for u in requests if u != html_file.resolve().as_uri()],
                     "open_evidence": page.locator("details[open] pre").count(),
                     "rows": page.locator("tr[id^=check-]").count(),
                     "verdict": page.inner_text("#verdict")}
        finally:
            browser.close()
            import shutil

            shutil.rmtree(home, ignore_errors=True)
    return shown
