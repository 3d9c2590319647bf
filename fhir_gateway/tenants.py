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

from fhir_gateway.config import Config, load_config


def tenant_config(main: Config, name: str) -> Config:
    cfg = load_config(main.tenants[name])
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

    root = create_app(config)
    if not config.tenants:
        return root
    mounts = {f"/t/{name}": create_app(tenant_config(config, name))
              for name in sorted(config.tenants)}
    root.extensions["tenants"] = mounts
    root.wsgi_app = DispatcherMiddleware(root.wsgi_app, mounts)
    return root
