"""`fhir-gateway conformance` / `python -m conformance`: run the checks against a FHIR base.

Exit codes: 0 every required check passed, 1 a required check failed (or errored),
2 the run could not happen (server down, not FHIR, bad options, SMART sign-in failed).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_BASE = "https://hapi.fhir.org/baseR4"  # public HAPI FHIR R4 test server (internet)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The runner's options (shared by `fhir-gateway conformance` and `python -m`)."""
    p.add_argument("--base", default=DEFAULT_BASE,
                   help=f"FHIR base URL (default: the public HAPI R4 server {DEFAULT_BASE}; "
                        "needs the internet)")
    p.add_argument("--token", help="bearer token for every request (or CONFORMANCE_TOKEN)")
    p.add_argument("--token2", help="a second patient's token, for the access group")
    p.add_argument("--patient", help="the patient --token is for (when it has no context)")
    p.add_argument("--patient2", help="the patient --token2 is for")
    p.add_argument("--smart-client", metavar="CLIENT_ID",
                   help="run a SMART standalone launch headless as this registered client")
    p.add_argument("--client-secret", help="secret of a confidential --smart-client "
                   "(or CONFORMANCE_CLIENT_SECRET); enables the introspection check")
    p.add_argument("--redirect-uri", default="http://127.0.0.1:9/callback",
                   help="a redirect URI registered for --smart-client (never opened; its "
                        "origin is also the Origin of the CORS checks)")
    p.add_argument("--scope", help="scopes to ask for (default: launch/patient openid fhirUser "
                   "offline_access patient/*.rs, or patient/*.cruds with --allow-writes)")
    p.add_argument("--patient-login", action="append", default=[], metavar="USER:PASSWORD",
                   help="a test patient's sign-in for --smart-client; give two for the access "
                        "group (or CONFORMANCE_PATIENT_LOGINS, comma separated)")
    p.add_argument("--backend-client", metavar="CLIENT_ID",
                   help="a backend-services client (private_key_jwt), for its checks")
    p.add_argument("--backend-key", metavar="FILE",
                   help="that client's private key as a JWK JSON file (RS384 or ES384)")
    p.add_argument("--backend-scope", default="system/*.rs",
                   help="scope the backend client asks for (default system/*.rs)")
    p.add_argument("--groups", help="comma-separated groups to run (default: all)")
    p.add_argument("--allow-writes", action="store_true",
                   help="let the runner create, update and delete (it deletes what it made)")
    p.add_argument("--report", metavar="DIR", help="write report.json, junit.xml, report.html")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    p.add_argument("--list", action="store_true", help="list every check and exit")
    p.add_argument("--quiet", action="store_true", help="no live progress")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m conformance",
                                description="Check what a FHIR R4 server really does.")
    add_arguments(p)
    return p


def list_checks() -> str:
    from conformance.model import all_checks

    rows = [(c.id, c.group, c.severity.value, c.spec) for c in all_checks()]
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{a.ljust(w[0])}  {b.ljust(w[1])}  {c.ljust(w[2])}  {d}"
                     for a, b, c, d in rows)


def _options(args: argparse.Namespace):
    from conformance.context import Options
    from conformance.model import CannotRun

    logins = list(args.patient_login)
    if not logins and os.environ.get("CONFORMANCE_PATIENT_LOGINS"):
        logins = os.environ["CONFORMANCE_PATIENT_LOGINS"].split(",")
    parsed = []
    for login in logins:
        user, sep, password = login.partition(":")
        if not sep or not user:
            raise CannotRun(f"--patient-login wants USER:PASSWORD, got {user!r}")
        parsed.append((user, password))
    base = args.base.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise CannotRun(f"--base must be an http(s) URL, not {base!r}")
    return Options(base=base, token=args.token or os.environ.get("CONFORMANCE_TOKEN"),
                   token2=args.token2, patient=args.patient, patient2=args.patient2,
                   groups=[g.strip() for g in args.groups.split(",")] if args.groups else None,
                   allow_writes=args.allow_writes, timeout=args.timeout,
                   smart_client=args.smart_client,
                   client_secret=args.client_secret or os.environ.get(
                       "CONFORMANCE_CLIENT_SECRET"),
                   redirect_uri=args.redirect_uri, scope=args.scope, patient_logins=parsed,
                   backend_client=args.backend_client, backend_key=args.backend_key,
                   backend_scope=args.backend_scope)


def run_from_args(args: argparse.Namespace) -> int:
    """Run with parsed arguments; print the summary; return the exit code."""
    from conformance.model import CannotRun
    from conformance.report import write_all
    from conformance.report.console import Progress, summary
    from conformance.runner import run

    if args.list:
        print(list_checks())
        return 0
    try:
        options = _options(args)
        report = run(options, progress=None if args.quiet else Progress())
    except CannotRun as exc:
        print(f"conformance: cannot run: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("conformance: interrupted", file=sys.stderr)
        return 2
    print(summary(report))
    if args.report:
        try:
            paths = write_all(report, Path(args.report))
        except OSError as exc:
            print(f"conformance: cannot write the report: {exc}", file=sys.stderr)
            return 2
        print("Reports: " + ", ".join(str(p) for p in paths.values()))
    return report.exit_code()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_from_args(args)
