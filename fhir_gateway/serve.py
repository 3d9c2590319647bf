"""Run the gateway under gunicorn (gthread workers), configured from `Config`."""

from __future__ import annotations

import gc

from gunicorn.app.base import BaseApplication

from fhir_gateway.config import Config
from fhir_gateway.logsetup import configure_logging


class GatewayServer(BaseApplication):
    """gunicorn embedded: each worker builds its own app (its own database pool)."""

    def __init__(self, config: Config) -> None:
        self.gateway_config = config
        super().__init__()

    def load_config(self) -> None:
        server = self.gateway_config.server
        options = {
            "bind": f"{server.host}:{server.port}",
            "workers": server.workers,
            "threads": server.threads,
            "worker_class": "gthread",
            "timeout": server.timeout,
            "keepalive": 5,
            # No access log: URLs carry search values (names, birth dates). The app logs one
            # PHI-free line per request instead.
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "info",
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        from fhir_gateway.tenants import create_wsgi

        app = create_wsgi(self.gateway_config)
        # What start-up built (modules, FHIR models, SQL schemas, the app) lives as long as the
        # worker: keep it out of the collector's sweeps, which otherwise walk all of it every
        # few hundred requests.
        gc.freeze()
        return app


def serve(config: Config) -> None:
    configure_logging()
    GatewayServer(config).run()
