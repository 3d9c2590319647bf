"""`python -m portal --fhir-base URL ...`: serve the portal (werkzeug, threaded, loopback)."""

from __future__ import annotations

import argparse
import os
import secrets

from portal.app import create_portal
from portal.settings import PortalSettings


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
    create_portal(settings).run(host=args.host, port=args.port, threaded=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
