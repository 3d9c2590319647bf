"""`python -m portal --fhir-base URL ...`: serve the portal (werkzeug, threaded, loopback)."""

from __future__ import annotations

import argparse
import os
import secrets

from werkzeug.serving import WSGIRequestHandler

from portal.app import create_portal
from portal.settings import PortalSettings


class PathOnlyRequestLog(WSGIRequestHandler):
    """The server's one line per request, without the query string: the SMART callback's
    carries the authorization code and `state`, the EHR launch's its launch id."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = getattr(self, "path", "").split("?", 1)[0]
        self.log("info", '"%s %s" %s %s', getattr(self, "command", "-"),
                 path.translate(self._control_char_table), code, size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m portal", description=__doc__)
    parser.add_argument("--fhir-base", required=True, help="the SMART server's FHIR base URL")
    parser.add_argument("--client-id", default="demo-portal")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--language", default="en", choices=["en", "es"])
    parser.add_argument("--idle-timeout", type=int, default=15 * 60)
    parser.add_argument("--absolute-timeout", type=int, default=12 * 60 * 60)
    args = parser.parse_args(argv)
    settings = PortalSettings(
        fhir_base=args.fhir_base, client_id=args.client_id,
        redirect_uri=f"http://{args.host}:{args.port}/callback",
        secret_key=os.environ.get("PORTAL_SECRET_KEY") or secrets.token_hex(32),
        language=args.language, idle_timeout=args.idle_timeout,
        absolute_timeout=args.absolute_timeout)
    create_portal(settings).run(host=args.host, port=args.port, threaded=True,
                                request_handler=PathOnlyRequestLog)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
