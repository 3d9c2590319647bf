"""No PHI in logs, even when the database fails: search values and written bodies are bound
parameters, and SQLAlchemy's error messages would print them (`[parameters: ...]`) into the
traceback the gateway logs, unless the engines hide them."""

from __future__ import annotations

import logging

from sqlalchemy import text
from werkzeug.test import Client

from fhir_gateway.app import create_app
from fhir_gateway.config import load_config


def test_a_database_error_logs_no_search_values(tmp_path, caplog):
    cfg = load_config(env={"FHIR_GATEWAY_DATA": str(tmp_path),
                           "FHIR_GATEWAY_AUTH_ENABLED": "false",
                           "FHIR_GATEWAY_EHR_DATABASE_URL": f"sqlite:///{tmp_path / 'ehr.db'}"})
    app = create_app(cfg)
    adapter = app.extensions["fhir_gateway"].adapter
    try:
        # any operational failure (a locked database, a dropped connection) will do: here the
        # string index is gone
        with adapter.engine.begin() as conn:
            conn.execute(text("ALTER TABLE idx_string RENAME TO idx_string_gone"))
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            resp = Client(app).get("/fhir/Patient?name=Zebulon-Smith&birthdate=1961-04-02",
                                   headers={"Accept": "application/fhir+json"})
        assert resp.status_code == 500
        logged = caplog.text
        assert "idx_string" in logged  # the failure itself is logged, with its traceback
        assert "zebulon" not in logged.lower() and "1961-04-02" not in logged
    finally:
        adapter.close()
