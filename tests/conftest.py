"""Shared fixtures: stores on SQLite and PostgreSQL, a live gateway on a loopback port.

Tests that need PostgreSQL or ../shared/testdata skip with the reason where they are missing;
`GATEWAY_REQUIRE_POSTGRES=1` / `GATEWAY_REQUIRE_SHARED_DATA=1` (set by .ci/run) make that a
failure instead, so CI proves them.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import func, select

from adapters.embedded import EmbeddedAdapter
from adapters.embedded.schema import resource, resource_version
from fhir_gateway.app import create_app
from fhir_gateway.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
SHARED_TESTDATA = ROOT.parent / "shared" / "testdata"
PG_ADMIN_URL = os.environ.get("GATEWAY_TEST_PG_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
FHIR_JSON = "application/fhir+json"
# CI runs hypothesis with fixed examples, so a red build is always reproducible; locally it
# explores new examples each run.
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI") == "true":
    hypothesis_settings.load_profile("ci")

# Seeded data is relative to a fixed day, so expectations never drift with the calendar.
SEED_TODAY = dt.date(2026, 6, 15)


def skip_or_fail(env_var: str, reason: str) -> None:
    """Skip with `reason`, or fail when `env_var`=1 (CI) demands the dependency."""
    if os.environ.get(env_var) == "1":
        pytest.fail(f"{reason} ({env_var}=1 requires it)")
    pytest.skip(reason)


def shared_testdata(sub: str) -> Path:
    path = SHARED_TESTDATA / sub
    if not path.is_dir():
        skip_or_fail("GATEWAY_REQUIRE_SHARED_DATA", f"{path} is not present")
    return path


# -- PostgreSQL -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The admin URL of a reachable PostgreSQL, or a skip/fail."""
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        skip_or_fail("GATEWAY_REQUIRE_POSTGRES",
                     f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {type(exc).__name__}")
    yield PG_ADMIN_URL


def make_pg_database(admin_url: str) -> tuple[str, callable]:
    from sqlalchemy import create_engine, text

    name = f"gw_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path) -> Iterator[str]:
    """A fresh, empty EHR database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ehr.sqlite3'}"
        return
    admin = request.getfixturevalue("pg_server")
    url, drop = make_pg_database(admin)
    yield url
    drop()


@pytest.fixture
def store(database_url) -> Iterator[EmbeddedAdapter]:
    adapter = EmbeddedAdapter(database_url)
    yield adapter
    adapter.close()


def fingerprint(adapter: EmbeddedAdapter) -> tuple:
    """Counts that change on every write: resources, versions, and the newest change."""
    if not hasattr(adapter, "engine"):  # an EHR reached over REST (tests.rest_support)
        return adapter.fingerprint()
    with adapter.engine.connect() as conn:
        return (
            conn.execute(select(func.count()).select_from(resource)).scalar(),
            conn.execute(select(func.count()).select_from(resource_version)).scalar(),
            conn.execute(select(func.max(resource.c.last_updated))).scalar(),
        )


# -- a live gateway -------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveGateway:
    base: str
    client: httpx.Client
    adapter: EmbeddedAdapter
    config: Config
    app: object = None  # the Flask app, for reaching its SMART server in tests

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def get(self, path: str, **kw) -> httpx.Response:
        return self.client.get(self.url(path), **kw)

    def post(self, path: str, json_body=None, **kw) -> httpx.Response:
        if json_body is not None:
            kw.setdefault("headers", {}).setdefault("Content-Type", FHIR_JSON)
            import orjson

            kw["content"] = orjson.dumps(json_body)
        return self.client.post(self.url(path), **kw)

    def put(self, path: str, json_body=None, **kw) -> httpx.Response:
        if json_body is not None:
            kw.setdefault("headers", {}).setdefault("Content-Type", FHIR_JSON)
            import orjson

            kw["content"] = orjson.dumps(json_body)
        return self.client.put(self.url(path), **kw)

    def delete(self, path: str, **kw) -> httpx.Response:
        return self.client.delete(self.url(path), **kw)

    def fingerprint(self) -> tuple:
        return fingerprint(self.adapter)


def start_live_gateway(data_dir: Path, database_url: str, env: dict[str, str] | None = None,
                       *, auth: bool = False) -> tuple[LiveGateway, callable]:
    """Serve the real app over HTTP on a free loopback port, in a thread.

    `auth=False` turns SMART off: the FHIR-surface suites test the REST behaviour itself; the
    SMART suites start it with `auth=True`.
    """
    adapter = EmbeddedAdapter(database_url)
    return serve_app(data_dir, {"FHIR_GATEWAY_EHR_DATABASE_URL": database_url, **(env or {})},
                     auth=auth, store=adapter, adapter=adapter)


def serve_app(data_dir: Path, env: dict[str, str], *, auth: bool, store=None,
              adapter=None, wrap=None) -> tuple[LiveGateway, callable]:
    """The app built from `env` (as the CLI would), served in a thread on a free port;
    `wrap(app)`, when given, is the WSGI app served in front of it (a fault-injecting
    middleware)."""
    from werkzeug.serving import make_server

    port = free_port()
    cfg = load_config(env={"FHIR_GATEWAY_DATA": str(data_dir), "FHIR_GATEWAY_PORT": str(port),
                           "FHIR_GATEWAY_AUTH_ENABLED": "true" if auth else "false", **env})
    app = create_app(cfg, adapter)
    gateway = app.extensions["fhir_gateway"]
    server = make_server("127.0.0.1", port, wrap(app) if wrap else app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    client = httpx.Client(timeout=30, headers={"Accept": FHIR_JSON})
    live = LiveGateway(f"http://127.0.0.1:{port}/fhir", client, store, cfg, app)

    def stop() -> None:
        client.close()
        server.shutdown()
        thread.join(5)
        worker = app.extensions.get("outbox_worker")
        if worker is not None:
            worker.stop()
        gateway.adapter.close()
        if store is not None and store is not gateway.adapter:
            store.close()

    return live, stop


@pytest.fixture
def gateway(database_url, tmp_path) -> Iterator[LiveGateway]:
    """An empty gateway over real HTTP, on SQLite and on PostgreSQL."""
    live, stop = start_live_gateway(tmp_path / "data", database_url)
    yield live
    stop()


@pytest.fixture(scope="module")
def seeded_gateway(tmp_path_factory) -> Iterator[LiveGateway]:
    """A gateway (SQLite) seeded with 3 synthetic patients, shared by a module's tests."""
    from fhir_gateway.synthetic import generate

    data = tmp_path_factory.mktemp("seeded")
    url = f"sqlite:///{data / 'ehr.sqlite3'}"
    live, stop = start_live_gateway(data, url)
    live.adapter.load(generate(3, 7, SEED_TODAY))
    yield live
    stop()


# The EHRs the SMART and portal-action suites run against: the embedded store, and the REST
# adapter in front of a second `fhir-gateway serve` process (plain mode) and of Medplum.
EHRS = ["embedded", "rest-gateway", "rest-medplum"]


def start_ehr(kind: str, data: Path, *, auth: bool) -> tuple[LiveGateway, callable]:
    """A gateway over `kind` of EHR, seeded with 3 synthetic patients. `live.adapter` reads
    the EHR itself (not through the gateway), so tests check what really got stored."""
    from fhir_gateway.synthetic import generate

    if kind == "embedded":
        live, stop = start_live_gateway(data, f"sqlite:///{data / 'ehr.sqlite3'}", auth=auth)
        live.adapter.load(generate(3, 7, SEED_TODAY))
        return live, stop
    from tests import rest_support

    no_cache = {"FHIR_GATEWAY_FHIR_REST_DEFAULT_CACHE_TTL": "0"}
    if kind == "rest-gateway":
        upstream = rest_support.seeded_upstream(data / "upstream")
        store = EmbeddedAdapter(upstream.database_url)
        live, stop = rest_support.start_rest_gateway(data / "front", upstream.base, no_cache,
                                                     auth=auth, store=store)

        def stop_all() -> None:
            stop()
            upstream.stop()

        return live, stop_all
    if kind == "rest-medplum":
        from tests.medplum_support import start_medplum

        base, stop_medplum = start_medplum()
        store = rest_support.RestStore(base)
        store.load(generate(3, 7, SEED_TODAY))
        live, stop = rest_support.start_rest_gateway(data / "front", base, no_cache,
                                                     auth=auth, store=store, vendor="medplum")

        def stop_both() -> None:
            stop()
            stop_medplum()

        return live, stop_both
    raise ValueError(kind)


@pytest.fixture(scope="module", params=EHRS)
def smart_env(request, tmp_path_factory):
    """A SQLite gateway with SMART on, 3 seeded patients, a public app `app-public`, patients
    `ann` (pat-0001) and `bob` (pat-0002), and a proxy `carol` for pat-0001 and pat-0003;
    once per EHR kind (`EHRS`). Modules about the authorization server itself, which no EHR
    changes, override it with `make_smart_env(..., ["embedded"])`."""
    yield from make_smart_env(tmp_path_factory, request.param)


def make_smart_env(tmp_path_factory, kind: str):
    from tests.smart_support import smart_env_for

    data = tmp_path_factory.mktemp("smart")
    live, stop = start_ehr(kind, data, auth=True)
    env = smart_env_for(live)
    yield env
    env.browser.close()
    stop()
