"""Run the gateway under gunicorn (gthread workers), configured from `Config`."""

from __future__ import annotations

import gc
import logging

from gunicorn.app.base import BaseApplication

from fhir_gateway.config import Config


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


# Libraries whose INFO lines would name upstream URLs with their query strings (PHI: search
# values such as names and birth dates): warnings and errors only.
QUIET_LOGGERS = ("httpx", "httpcore", "urllib3")


def configure_logging() -> None:
    """The server's logging: INFO lines with time and logger name, no PHI from libraries, and
    none of the per-record lookups the format never prints (the logging HOWTO's optimisation
    knobs: caller frame, thread, process and multiprocessing names), since the gateway writes
    one line per request."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging._srcfile = None  # noqa: SLF001 - documented in the logging HOWTO ("Optimization")
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


def serve(config: Config) -> None:
    configure_logging()
    GatewayServer(config).run()
