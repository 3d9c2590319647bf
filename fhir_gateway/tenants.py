"""Several clinics in one gateway: each tenant is a whole app of its own (its adapter, EHR,
state database, SMART server and discovery document), mounted at `/t/{name}`.

`[tenants]` in the main config maps each name to the tenant's config file. A tenant's data lives
under the main data directory (`tenants/{name}`) unless its own config says otherwise, and its
public base is `{root}/t/{name}/fhir`. Tokens of one clinic mean nothing at another: each tenant
has its own signing keys and issuer.
"""

from __future__ import annotations

from pathlib import Path

from werkzeug.middleware.dispatcher import DispatcherMiddleware

from fhir_gateway.config import Config, ConfigError, load_config


def tenant_config(main: Config, name: str) -> Config:
    """The tenant's own configuration: its file alone. The environment configures the main
    app; were it applied here too (`FHIR_GATEWAY_DATA`, `DATABASE_URL`...), every clinic would
    get the same data directory and databases."""
    cfg = load_config(main.tenants[name], env={})
    if cfg.data_dir == Config().data_dir:
        cfg.data_dir = str(Path(main.data_dir) / "tenants" / name)
    cfg.server = main.server.__class__(**vars(main.server))
    cfg.server.base_url = f"{main.public_base[: -len('/fhir')]}/t/{name}/fhir"
    if not cfg.redis_url:
        cfg.redis_url = main.redis_url
    return cfg


def create_wsgi(config: Config):
    """The app for `config`; with tenants, that app at the root and each tenant's app at
    /t/{name}."""
    from fhir_gateway.app import create_app

    if not config.tenants:
        return create_app(config)
    configs = {name: tenant_config(config, name) for name in sorted(config.tenants)}
    apart(config, configs)
    root = create_app(config)
    mounts = {f"/t/{name}": create_app(cfg) for name, cfg in configs.items()}
    root.extensions["tenants"] = mounts
    root.wsgi_app = DispatcherMiddleware(root.wsgi_app, mounts)
    return root


def apart(main: Config, tenants: dict[str, Config]) -> None:
    """Refuse to start when two clinics (or a clinic and the main app) would share a data
    directory (keys, sessions, cursors), a state database (accounts, tokens, audit, outbox)
    or an embedded EHR database."""
    owners: dict[tuple[str, str], str] = {}
    problems = []
    for who, cfg in [("the main app", main), *((f"tenant {n}", c) for n, c in tenants.items())]:
        used = [("data directory", str(Path(cfg.data_dir).resolve())),
                ("state database", cfg.state_database_url)]
        if cfg.adapter.kind == "embedded":
            used.append(("EHR database", cfg.ehr_database_url))
        for what, value in used:
            other = owners.setdefault((what, value), who)
            if other != who:
                problems.append(f"{who} and {other} would share one {what} ({what}s must be "
                                "apart: set data_dir or the database URLs in each tenant's file)")
    if problems:
        raise ConfigError(problems)
