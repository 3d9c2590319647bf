"""Configuration: TOML, environment over it, and problems explained in plain words."""

from __future__ import annotations

import pytest

from fhir_gateway.cli import main as cli_main
from fhir_gateway.config import ConfigError, load_config


def test_defaults_need_no_file():
    cfg = load_config(env={})
    assert cfg.server.host == "127.0.0.1" and cfg.server.port == 8080
    assert cfg.ehr_database_url == "sqlite:///var/ehr.sqlite3"
    assert cfg.public_base == "http://127.0.0.1:8080/fhir"


def test_environment_overrides_file(tmp_path):
    conf = tmp_path / "gw.toml"
    conf.write_text('data_dir = "/srv/gw"\n[server]\nport = 9000\nthreads = 4\n'
                    '[limits]\nmax_count = 200\n')
    cfg = load_config(conf, env={"FHIR_GATEWAY_PORT": "9100",
                                 "FHIR_GATEWAY_LIMITS_MAX_COUNT": "300"})
    assert cfg.server.port == 9100 and cfg.server.threads == 4
    assert cfg.limits.max_count == 300
    assert cfg.data_dir == "/srv/gw"
    assert cfg.ehr_database_url == "sqlite:////srv/gw/ehr.sqlite3"


def test_config_file_from_environment(tmp_path):
    conf = tmp_path / "gw.toml"
    conf.write_text("[server]\nworkers = 3\n")
    assert load_config(env={"FHIR_GATEWAY_CONFIG": str(conf)}).server.workers == 3


@pytest.mark.parametrize(("text", "env", "expected"), [
    ("[server]\nport = 'abc'\n", {}, "'server.port' must be a whole number"),
    ("[server]\nport = 70000\n", {}, "server.port must be between 1 and 65535"),
    ("[server]\nprot = 1\n", {}, "there is no setting 'server.prot'"),
    ("[adapter]\nkind = 'epic'\n", {}, "adapter.kind 'epic' is unknown"),
    ("[embedded]\ndatabase_url = 'mysql://x'\n", {}, "must be a sqlite:/// or postgresql"),
    ("", {"FHIR_GATEWAY_PORT": "eighty"}, "Environment FHIR_GATEWAY_PORT"),
    ("[limits]\ndefault_count = 5000\n", {}, "limits.default_count must be at least 1"),
    ("not toml = = =", {}, "is not valid TOML"),
])
def test_problems_are_explained(tmp_path, text, env, expected):
    conf = tmp_path / "gw.toml"
    conf.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(conf, env=env)
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_check_config_command(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FHIR_GATEWAY_CONFIG", raising=False)
    good = tmp_path / "good.toml"
    good.write_text("[database]\nurl = 'postgresql+psycopg://gw:secret@db/gw'\n")
    assert cli_main(["check-config", "--config", str(good)]) == 0
    out = capsys.readouterr().out
    assert "Configuration OK" in out and "gw:***@db/gw" in out and "secret" not in out
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nport = 0\nthreads = 0\n")
    assert cli_main(["check-config", "--config", str(bad)]) == 2
    out = capsys.readouterr().out
    assert "server.port must be between 1 and 65535, not 0." in out
    assert "server.workers and server.threads must be at least 1." in out


def test_missing_config_file_is_explained(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.toml", env={})
    assert "does not exist" in err.value.problems[0]


REST = {"FHIR_GATEWAY_ADAPTER": "fhir_rest",
        "FHIR_GATEWAY_FHIR_REST_BASE_URL": "https://ehr.example.org/fhir"}


@pytest.mark.parametrize(("env", "words"), [
    ({"FHIR_GATEWAY_ADAPTER": "fhir_rest"}, "fhir_rest.base_url must be the EHR's FHIR base"),
    ({**REST, "FHIR_GATEWAY_FHIR_REST_VENDOR": "acme"}, "fhir_rest.vendor 'acme' is unknown"),
    ({**REST, "FHIR_GATEWAY_FHIR_REST_AUTH": "magic"}, "fhir_rest.auth must be one of"),
    ({**REST, "FHIR_GATEWAY_FHIR_REST_AUTH": "bearer"}, "needs FHIR_GATEWAY_FHIR_REST_BEARER"),
    ({**REST, "FHIR_GATEWAY_FHIR_REST_AUTH": "backend-services"},
     "needs fhir_rest.client_id and fhir_rest.private_key_file"),
    ({**REST, "FHIR_GATEWAY_FHIR_REST_MAX_WAIT": "soon"}, "'fhir_rest.max_wait' must be a number"),
    ({**REST, "FHIR_GATEWAY_FHIR_REST_RETRIES": "1.5"}, "must be a whole number"),
    ({**REST, "REDIS_URL": "http://cache"}, "redis_url must be a redis:// URL"),
    ({**REST, "FHIR_GATEWAY_FHIR_REST_DENY": "Task.fly"}, "fhir_rest.deny: 'Task.fly'"),
    ({**REST, "FHIR_GATEWAY_FHIR_REST_ALLOW": "Taks.update"}, "not an R4 resource type"),
    ({**REST, "FHIR_GATEWAY_FHIR_REST_CACHE_TTL": "Patient=soon"}, "must look like Patient=300"),
    ({**REST, "FHIR_GATEWAY_FHIR_REST_TRANSPORT": "urllib"},
     "fhir_rest.transport 'urllib' is unknown; choose one of curl, httpx"),
])
def test_rest_adapter_settings_are_checked(env, words):
    with pytest.raises(ConfigError) as info:
        load_config(env=env)
    assert any(words in p for p in info.value.problems), info.value.problems


def test_rest_adapter_settings_load_from_the_environment():
    cfg = load_config(env={**REST, "FHIR_GATEWAY_FHIR_REST_VENDOR": "epic",
                           "FHIR_GATEWAY_FHIR_REST_MAX_WAIT": "2.5",
                           "FHIR_GATEWAY_OUTBOX_INTERVAL": "0.5"})
    assert (cfg.fhir_rest.vendor, cfg.fhir_rest.max_wait, cfg.outbox.interval) == \
        ("epic", 2.5, 0.5)


@pytest.mark.parametrize(("env", "kind"), [({}, "CurlTransport"),
                                           ({"FHIR_GATEWAY_FHIR_REST_TRANSPORT": "curl"},
                                            "CurlTransport"),
                                           ({"FHIR_GATEWAY_FHIR_REST_TRANSPORT": "httpx"},
                                            "HTTPTransport")])
def test_rest_adapter_transport_comes_from_the_config(tmp_path, env, kind):
    from fhir_gateway.ehr import build_adapter

    cfg = load_config(env={**REST, "FHIR_GATEWAY_DATA": str(tmp_path), **env})
    assert cfg.fhir_rest.transport == env.get("FHIR_GATEWAY_FHIR_REST_TRANSPORT", "curl")
    adapter = build_adapter(cfg)
    try:
        assert type(adapter.client.transport).__name__ == kind
        assert type(adapter.client._token_http._transport).__name__ == kind
    finally:
        adapter.close()


def test_tenant_names_are_checked(tmp_path):
    (tmp_path / "main.toml").write_text('[tenants]\n"Bad Name" = "x.toml"\n')
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "main.toml", env={})
    assert any("tenants.Bad Name" in p for p in info.value.problems)


def test_a_ca_file_that_is_not_there_is_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(env={**REST, "FHIR_GATEWAY_DATA": str(tmp_path),
                         "FHIR_GATEWAY_FHIR_REST_CA_FILE": str(tmp_path / "missing.pem")})
    assert "fhir_rest.ca_file" in str(info.value) and "missing.pem" in str(info.value)
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = load_config(env={**REST, "FHIR_GATEWAY_DATA": str(tmp_path),
                           "FHIR_GATEWAY_FHIR_REST_CA_FILE": str(pem)})
    assert cfg.fhir_rest.ca_file == str(pem)
