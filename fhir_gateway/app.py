"""The Flask app factory: configuration in, adapter wired, blueprints registered, no globals."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask, Response, g, has_app_context, request
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException

from adapters.base import Adapter
from adapters.errors import FhirError
from fhir_gateway.audit import AuditLog, AuditRecord, fit
from fhir_gateway.config import Config
from fhir_gateway.ehr import build_adapter
from fhir_gateway.errors import issue, operation_outcome
from fhir_gateway.http.cors import install_cors
from fhir_gateway.http.exchange import begin, end, error_response, internal_error
from fhir_gateway.http.negotiation import FHIR_JSON, render
from fhir_gateway.paging import CursorSigner, load_or_create_key
from fhir_gateway.service import FhirService
from smart_launch.db import make_state_engine
from smart_launch.discovery import Endpoints, oauth_uris_extension
from smart_launch.server import SmartServer

log = logging.getLogger("fhir_gateway.request")


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
        request_id = fields.pop("request_id", None)
        if request_id is None and has_app_context() and g.get("exchange") is not None:
            request_id = g.exchange.request_id
        # Values can be a caller's words (a type or id from a URL): fitted to the log's limits
        # rather than refused, so the entry is never left out.
        fitted = {name: fit(name, value) if isinstance(value, str) else value
                  for name, value in fields.items()}
        try:
            self.audit.append(AuditRecord(action=fit("action", action), outcome=outcome,
                                          request_id=fit("request_id", request_id), **fitted))
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

    if config.server.fast_reads:
        from fhir_gateway.http.fastpath import FastReads

        app.wsgi_app = FastReads(app, app.wsgi_app)  # type: ignore[method-assign]
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
        worker = Worker(Replayer(outbox, gateway.service), cfg.outbox.interval,
                        cfg.outbox.keep_days)
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
    app.register_error_handler(FhirError, error_response)

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
        ex = g.get("exchange")
        return internal_error(ex.request_id if ex is not None else None)


def _register_logging(app: Flask) -> None:
    """Every request is an exchange (fhir_gateway.http.exchange): begun before anything else
    looks at it, ended with its access-log entry and one PHI-free log line."""
    gateway = app.extensions["fhir_gateway"]

    @app.before_request
    def start() -> None:
        g.exchange = begin(gateway, request._get_current_object())

    @app.after_request
    def finish(resp: Response) -> Response:
        ex = g.get("exchange") or begin(gateway, request._get_current_object())
        return end(ex, resp, request.url_rule.rule if request.url_rule else "-")
