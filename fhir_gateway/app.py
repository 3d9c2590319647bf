"""The Flask app factory: configuration in, adapter wired, blueprints registered, no globals."""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from dataclasses import dataclass

from flask import Flask, Response, g, has_app_context, request
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException

from adapters.base import Adapter, collect_notices
from adapters.errors import FhirError
from fhir_gateway.access.policy import remember_patient_refs
from fhir_gateway.audit import AuditLog, AuditRecord
from fhir_gateway.config import Config
from fhir_gateway.ehr import build_adapter
from fhir_gateway.errors import Unauthorized, issue, operation_outcome, outcome_for, status_for
from fhir_gateway.http.cors import install_cors
from fhir_gateway.http.negotiation import FHIR_JSON, render
from fhir_gateway.paging import CursorSigner, load_or_create_key
from fhir_gateway.service import FhirService
from smart_launch.db import make_state_engine
from smart_launch.discovery import Endpoints, oauth_uris_extension
from smart_launch.server import SmartServer

log = logging.getLogger("fhir_gateway.request")
# Request ids: a random prefix per process and a counter (unique, and no system call each).
_ID_PREFIX = uuid.uuid4().hex[:8]
_ID_COUNTER = itertools.count(1)


def _next_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


@dataclass
class Gateway:
    """What one app instance runs on: its configuration, adapter and FHIR service, and (when
    SMART is on) the authorization server and the audit log."""

    config: Config
    adapter: Adapter
    service: FhirService
    smart: SmartServer | None = None
    audit: AuditLog | None = None

    def record(self, action: str, outcome: str, **fields) -> None:
        """Append to the audit log; never let auditing break a request (it is logged)."""
        if self.audit is None:
            return
        request_id = fields.pop("request_id", None) or (
            g.get("request_id") if has_app_context() else None)
        try:
            self.audit.append(AuditRecord(action=action, outcome=outcome,
                                          request_id=request_id, **fields))
        except Exception:  # noqa: BLE001
            log.exception("audit append failed request_id=%s", request_id)


class _FhirApiWithoutSessions(SecureCookieSessionInterface):
    """The FHIR API is stateless (a bearer token per request): no session cookie to open or
    save there; the sign-in pages under /auth keep theirs."""

    def open_session(self, app: Flask, request):
        if request.path.startswith("/fhir/"):
            return self.null_session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session, response) -> None:
        if isinstance(session, self.null_session_class):
            return
        super().save_session(app, session, response)


def create_app(config: Config, adapter: Adapter | None = None) -> Flask:
    app = Flask("fhir_gateway")
    app.session_interface = _FhirApiWithoutSessions()
    app.config["MAX_CONTENT_LENGTH"] = config.limits.max_body_bytes + 1  # see rest._body
    app.json.sort_keys = False
    adapter = adapter or build_adapter(config)
    keys = config.data_path / "keys"
    signer = CursorSigner(load_or_create_key(keys / "cursor.key"))
    app.secret_key = config.auth.secret_key or load_or_create_key(keys / "session.key")
    gateway = Gateway(config, adapter, FhirService(adapter, config, signer))
    app.extensions["fhir_gateway"] = gateway
    remote = config.adapter.kind == "fhir_rest"
    if config.auth.enabled or remote:  # the gateway's own state: one engine, one pool
        config.data_path.mkdir(parents=True, exist_ok=True)
        state = make_state_engine(config.state_database_url)
        if config.auth.enabled:
            _init_smart(app, gateway, state)
        if remote:
            _init_outbox(app, gateway, state)

    from fhir_gateway.http.rest import bp as fhir_bp

    app.register_blueprint(fhir_bp, url_prefix="/fhir")
    _register_errors(app, config)
    _register_logging(app)

    @app.get("/healthz")
    def healthz() -> Response:
        health = adapter.health()
        return render(health, 200 if health.get("status") == "ok" else 503,
                      "application/json", False)

    return app


def _init_outbox(app: Flask, gateway: Gateway, engine: Engine) -> None:
    """Writes a remote EHR cannot take now are kept and replayed (see fhir_gateway.outbox);
    payments it cannot take at all go to the billing ledger (fhir_gateway.ledger)."""
    from fhir_gateway.http.outbox_api import bp as outbox_bp
    from fhir_gateway.ledger import Ledger
    from fhir_gateway.outbox import Outbox, Replayer, Worker

    cfg = gateway.config
    outbox = Outbox(engine, cfg.outbox.max_attempts)
    gateway.service.outbox = outbox
    gateway.service.ledger = Ledger(engine)
    app.register_blueprint(outbox_bp, url_prefix="/fhir")
    if cfg.outbox.worker:
        worker = Worker(Replayer(outbox, gateway.service), cfg.outbox.interval)
        worker.start()
        app.extensions["outbox_worker"] = worker


def _init_smart(app: Flask, gateway: Gateway, engine: Engine) -> None:
    """The SMART authorization server, its endpoints, the audit log and CORS."""
    from smart_launch.authorize import bp as authorize_bp
    from smart_launch.endpoints import bp as endpoints_bp
    from smart_launch.endpoints import discovery_bp

    cfg = gateway.config
    gateway.audit = AuditLog(engine, batch_window=cfg.auth.audit_batch_ms / 1000)

    def patient_name(pid: str) -> str | None:
        try:
            patient = gateway.adapter.read("Patient", pid)
        except FhirError:
            return None
        name = (patient.get("name") or [{}])[0]
        return " ".join([*name.get("given", []), name.get("family", "")]).strip() or None

    smart = SmartServer(Endpoints(cfg.public_base), engine, cfg.data_path,
                        audit=gateway.record, patient_name=patient_name)
    smart.init_app(app)
    gateway.smart = smart
    gateway.service.security = oauth_uris_extension(smart.endpoints)
    gateway.service.smart, gateway.service.audit = smart, gateway.audit
    app.extensions["smart"] = smart
    app.register_blueprint(authorize_bp, url_prefix="/auth")
    app.register_blueprint(endpoints_bp, url_prefix="/auth")
    app.register_blueprint(discovery_bp, url_prefix="/fhir")
    from fhir_gateway.http.audit_api import bp as audit_bp

    app.register_blueprint(audit_bp, url_prefix="/fhir")
    install_cors(app, smart.clients)


def _register_errors(app: Flask, config: Config) -> None:
    @app.errorhandler(FhirError)
    def fhir_error(exc: FhirError) -> Response:
        resp = render(outcome_for(exc), status_for(exc), FHIR_JSON, False)
        if isinstance(exc, Unauthorized):
            resp.headers["WWW-Authenticate"] = exc.challenge
        wait = getattr(exc, "retry_after", None)
        if wait is not None:
            resp.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
        return resp

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = {404: "not-found", 405: "not-supported", 413: "too-costly"}.get(
            exc.code or 500, "invalid" if (exc.code or 500) < 500 else "exception")
        text = {413: f"The body is larger than {config.limits.max_body_bytes} bytes",
                404: f"No FHIR endpoint at {request.path}"}.get(exc.code or 0, exc.description)
        outcome = operation_outcome([issue("error", code, text)])
        return render(outcome, exc.code or 500, FHIR_JSON, False)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error request_id=%s", g.get("request_id"))
        outcome = operation_outcome([issue("fatal", "exception",
                                           f"Internal error (request id {g.get('request_id')})")])
        return render(outcome, 500, FHIR_JSON, False)


def _register_logging(app: Flask) -> None:
    """One line per request: method, route, status, time, request id. Never the query string
    or body, which can carry PHI (names, birth dates)."""

    gateway = app.extensions["fhir_gateway"]

    @app.before_request
    def start() -> None:
        ctx = g._get_current_object()  # one context lookup, not one per attribute
        ctx.request_id = request.headers.get("X-Request-Id", "")[:64] or _next_request_id()
        ctx.started = time.perf_counter()
        ctx.adapter_notices = collect_notices()
        # Only while nothing changes a resource as it is shown (reads); off for writes.
        remember_patient_refs(request.method in ("GET", "HEAD"))

    @app.after_request
    def finish(resp: Response) -> Response:
        ctx, req = g._get_current_object(), request._get_current_object()
        request_id = getattr(ctx, "request_id", "")
        access = getattr(ctx, "fhir_access", None)
        status = resp.status_code
        if access is not None and gateway.audit is not None:
            who = getattr(ctx, "fhir_principal", None)
            interaction, rtype, rid = access
            gateway.record(
                interaction, "allowed" if status < 400 else "denied",
                user=(who.fhir_user or who.subject) if who else None,
                client_id=who.client_id if who else None,
                patient=getattr(ctx, "fhir_patient", None) or (who.patient if who else None),
                resource_type=rtype, resource_id=rid, status=status, request_id=request_id)
        resp.headers["X-Request-Id"] = request_id
        elapsed = (time.perf_counter() - getattr(ctx, "started", time.perf_counter())) * 1000
        rule = req.url_rule.rule if req.url_rule else "-"
        log.info("%s %s %s %.1fms id=%s", req.method, rule, status, elapsed, request_id)
        return resp
