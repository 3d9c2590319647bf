"""`fhir-gateway`: serve, seed, import, check-config, demo, capabilities, outbox, ..."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

from fhir_gateway.config import Config, ConfigError, load_config


def _config(args: argparse.Namespace) -> Config:
    try:
        cfg = load_config(getattr(args, "config", None))
    except ConfigError as exc:
        print("The configuration has problems:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        raise SystemExit(2) from None
    if getattr(args, "host", None):
        cfg.server.host = args.host
    if getattr(args, "port", None):
        cfg.server.port = args.port
    if getattr(args, "workers", None):
        cfg.server.workers = args.workers
    if getattr(args, "threads", None):
        cfg.server.threads = args.threads
    return cfg


def _store(cfg: Config):
    from fhir_gateway.ehr import build_adapter

    if cfg.adapter.kind != "embedded":
        print(f"seed and import need the embedded adapter, not {cfg.adapter.kind!r}",
              file=sys.stderr)
        raise SystemExit(2)
    return build_adapter(cfg)


def cmd_serve(args: argparse.Namespace) -> int:
    from fhir_gateway.serve import serve

    cfg = _config(args)
    print(f"Serving FHIR R4 at http://{cfg.server.host}:{cfg.server.port}/fhir", flush=True)
    serve(cfg)
    return 0


def seed(cfg: Config, patients: int, seed_value: int, today: dt.date | None = None) -> int:
    from fhir_gateway.synthetic import generate

    resources = generate(patients, seed_value, today)
    store = _store(cfg)
    try:
        return store.load(resources)
    finally:
        store.close()


def cmd_seed(args: argparse.Namespace) -> int:
    cfg = _config(args)
    today = dt.date.fromisoformat(args.today) if args.today else None
    started = time.perf_counter()
    count = seed(cfg, args.patients, args.seed, today)
    print(f"Seeded {count} resources for {args.patients} patients (seed {args.seed}) "
          f"into {cfg.ehr_database_url} in {time.perf_counter() - started:.1f}s")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from adapters.errors import FhirError
    from fhir_gateway.importer import import_file
    from fhir_gateway.paging import CursorSigner
    from fhir_gateway.service import FhirService

    cfg = _config(args)
    store = _store(cfg)
    service = FhirService(store, cfg, CursorSigner(b"import"))
    total, failed = 0, 0
    started = time.perf_counter()
    for name in args.files:
        path = Path(name)
        try:
            count = import_file(service, path, cfg.public_base)
        except (FhirError, OSError) as exc:
            failed += 1
            where = f" at {', '.join(exc.expression)}" if getattr(exc, "expression", None) else ""
            print(f"{path.name}: not imported ({getattr(exc, 'diagnostics', exc)}{where})",
                  file=sys.stderr)
            continue
        total += count
        print(f"{path.name}: {count} resources")
    elapsed = time.perf_counter() - started
    print(f"Imported {total} resources from {len(args.files) - failed} files in {elapsed:.1f}s"
          + (f"; {failed} files failed" if failed else ""))
    store.close()
    return 1 if failed else 0


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print("The configuration has problems:")
        for problem in exc.problems:
            print(f"  - {problem}")
        return 2
    print(f"Configuration OK (from {cfg.source}, environment applied):")
    print(f"  FHIR base        {cfg.public_base}")
    print(f"  adapter          {cfg.adapter.kind}")
    print(f"  data directory   {cfg.data_path.resolve()}")
    print(f"  EHR database     {_mask(cfg.ehr_database_url)}")
    print(f"  gateway database {_mask(cfg.state_database_url)}")
    print(f"  workers/threads  {cfg.server.workers}/{cfg.server.threads}")
    lim = cfg.limits
    print(f"  limits           body {lim.max_body_bytes} B, JSON depth {lim.max_json_depth}, "
          f"_count {lim.default_count} (max {lim.max_count})")
    return 0


def _mask(url: str) -> str:
    """A database URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url


def cmd_demo(args: argparse.Namespace) -> int:
    from fhir_gateway.serve import serve

    cfg = _config(args)
    store = _store(cfg)
    existing = store.count("Patient")
    store.close()
    if existing == 0:
        count = seed(cfg, args.patients, args.seed)
        print(f"Seeded {count} resources for {args.patients} synthetic patients.")
    base = f"http://{cfg.server.host}:{cfg.server.port}/fhir"
    portal = None
    if cfg.auth.enabled:
        print(demo_smart(cfg))
        portal = start_demo_portal(cfg.public_base)
        print(PORTAL_TEXT.format(url=DEMO_PORTAL_URL, user=DEMO_USER, password=DEMO_PASSWORD))
    print(DEMO_TEXT.format(base=base, data=cfg.data_path.resolve(),
                           auth=AUTH_LINE if cfg.auth.enabled else ""), flush=True)
    try:
        serve(cfg)
    finally:
        if portal is not None:
            portal.terminate()
            portal.wait(10)
    return 0


DEMO_PORTAL_URL = "http://127.0.0.1:8081"


def start_demo_portal(fhir_base: str):
    """The reference portal as its own process (`python -m portal`): it reaches the gateway
    only over HTTP, exactly as any other SMART app would."""
    import subprocess

    return subprocess.Popen([sys.executable, "-m", "portal", "--fhir-base", fhir_base,
                             "--client-id", "demo-portal", "--host", "127.0.0.1",
                             "--port", "8081"])


PORTAL_TEXT = """
Patient portal: {url}   (sign in as {user} / {password})"""


DEMO_PORTAL_REDIRECT = "http://127.0.0.1:8081/callback"
DEMO_SECRET = "demo-secret-not-for-production"
DEMO_USER, DEMO_PASSWORD = "demo", "demo-password-1"


def demo_smart(cfg: Config) -> str:
    """Register the demo apps and patient login once; return what to print about them."""
    import json

    from joserfc.jwk import RSAKey

    smart = _smart(cfg)
    if smart.clients.get("demo-portal") is None:
        smart.clients.add("demo-portal", "public", redirect_uris=[DEMO_PORTAL_REDIRECT],
                          launch_uri="http://127.0.0.1:8081/launch", name="Demo patient portal")
    if smart.clients.get("demo-confidential") is None:
        smart.clients.add("demo-confidential", "symmetric", secret=DEMO_SECRET,
                          redirect_uris=["http://127.0.0.1:8082/callback"],
                          name="Demo confidential app")
    key_file = cfg.data_path / "keys" / "demo-backend.private.jwk.json"
    if smart.clients.get("demo-backend") is None:
        key = RSAKey.generate_key(2048, private=True)
        kid = key.thumbprint()
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(json.dumps(dict(key.as_dict(private=True), kid=kid, alg="RS384")))
        key_file.chmod(0o600)
        public = dict(key.as_dict(private=False), kid=kid, alg="RS384", use="sig")
        smart.clients.add("demo-backend", "asymmetric", jwks={"keys": [public]},
                          scope="system/*.rs system/*.cruds", name="Demo backend service")
    if smart.accounts.get(DEMO_USER) is None:
        smart.accounts.add(DEMO_USER, DEMO_PASSWORD, fhir_user="Patient/pat-0001",
                           patients=["pat-0001"], display_name="Demo patient")
    return (f"""
SMART App Launch (discovery: {cfg.public_base}/.well-known/smart-configuration)
  demo patient login   username {DEMO_USER}   password {DEMO_PASSWORD}   (record pat-0001)
  apps                 demo-portal (public, redirect {DEMO_PORTAL_REDIRECT})
                       demo-confidential (secret {DEMO_SECRET})
                       demo-backend (private_key_jwt; private key {key_file})""")


AUTH_LINE = """
Every FHIR call needs a SMART token. For curl, mint one as the demo backend service:
  export TOKEN=$(.venv/bin/fhir-gateway token --client-id demo-backend --scope 'system/*.rs')
  alias curl='curl -H "Authorization: Bearer $TOKEN"'
"""

DEMO_TEXT = """
FHIR R4 gateway (embedded EHR, data in {data})
  FHIR base: {base}
{auth}
Try:
  curl -s {base}/metadata | head -c 400
  curl -s '{base}/Patient?_count=5&_elements=name,birthDate'
  curl -s '{base}/Patient/pat-0001'
  curl -s '{base}/Observation?patient=pat-0001&category=vital-signs&_sort=-date&_count=3'
  curl -s '{base}/MedicationRequest?patient=pat-0001&status=active\
&_include=MedicationRequest:medication'
  curl -s '{base}/Slot?status=free&_count=5&_sort=start'
  curl -s '{base}/Observation?patient=pat-0001&_summary=count'

Stop with Ctrl-C.
"""


def _smart(cfg: Config):
    """The SMART server's state, opened offline (no HTTP) for the admin commands."""
    from smart_launch.db import make_state_engine
    from smart_launch.discovery import Endpoints
    from smart_launch.server import SmartServer

    cfg.data_path.mkdir(parents=True, exist_ok=True)
    return SmartServer(Endpoints(cfg.public_base), make_state_engine(cfg.state_database_url),
                       cfg.data_path)


def cmd_clients(args: argparse.Namespace) -> int:
    import json

    smart = _smart(_config(args))
    if args.action == "list":
        for client in smart.clients.list():
            print(json.dumps(client.summary()))
        return 0
    if args.action == "remove":
        if not smart.clients.remove(args.client_id_pos or args.client_id):
            print(f"no client {args.client_id_pos or args.client_id!r}", file=sys.stderr)
            return 1
        print(f"removed {args.client_id_pos or args.client_id}")
        return 0
    kind = "public" if args.public else "symmetric" if args.secret else \
        "asymmetric" if (args.jwks or args.jwks_url) else None
    if kind is None:
        print("say how the client authenticates: --public, --secret S, --jwks FILE or "
              "--jwks-url URL", file=sys.stderr)
        return 2
    jwks = json.loads(Path(args.jwks).read_text()) if args.jwks else None
    try:
        client = smart.clients.add(args.client_id, kind, redirect_uris=args.redirect_uri or [],
                                   secret=args.secret, jwks=jwks, jwks_url=args.jwks_url,
                                   scope=args.scope or "", name=args.name or "",
                                   launch_uri=args.launch_uri)
    except ValueError as exc:
        print(f"cannot add the client: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(client.summary()))
    return 0


def cmd_users(args: argparse.Namespace) -> int:
    smart = _smart(_config(args))
    if args.action == "list":
        for account in smart.accounts.list():
            print(f"{account.username}\t{account.fhir_user}\tpatients={','.join(account.patients)}"
                  f"\ttotp={'yes' if account.totp_enrolled else 'no'}")
        return 0
    if not (args.username and args.password and (args.patient or args.practitioner)):
        print("users add needs --username, --password and --patient (or --practitioner)",
              file=sys.stderr)
        return 2
    fhir_user = f"Practitioner/{args.practitioner}" if args.practitioner else \
        f"Patient/{args.patient[0]}"
    try:
        secret = smart.accounts.add(args.username, args.password, fhir_user=fhir_user,
                                    patients=args.patient or [], totp=args.totp,
                                    display_name=args.name or "")
    except ValueError as exc:
        print(f"cannot add the user: {exc}", file=sys.stderr)
        return 2
    print(f"added {args.username} ({fhir_user})")
    if secret:
        print(f"TOTP secret: {secret}")
        print(f"otpauth URI: {smart.accounts.totp_uri(args.username, secret)}")
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    from urllib.parse import urlencode

    cfg = _config(args)
    smart = _smart(cfg)
    client = smart.clients.get(args.client_id)
    if client is None:
        print(f"no client {args.client_id!r}", file=sys.stderr)
        return 1
    launch = smart.records.create_launch(client.client_id, args.patient, args.encounter)
    target = client.launch_uri or (client.redirect_uris[0] if client.redirect_uris else "")
    sep = "&" if "?" in target else "?"
    print(f"{target}{sep}{urlencode({'iss': cfg.public_base, 'launch': launch})}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Mint an access token offline for a registered client (admin tool, for curl)."""
    cfg = _config(args)
    smart = _smart(cfg)
    client = smart.clients.get(args.client_id)
    if client is None:
        print(f"no client {args.client_id!r}", file=sys.stderr)
        return 1
    token = smart.mint(client, args.scope, patient=args.patient)
    print(token)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fhir-gateway",
                                     description="FHIR R4 gateway for patient portals")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", help="TOML config file (or FHIR_GATEWAY_CONFIG)")
        p.set_defaults(func=func)
        return p

    from fhir_gateway import ehr_commands

    def add_with_config(name: str, func, help_text: str) -> argparse.ArgumentParser:
        return add(name, lambda args: func(args, _config(args)), help_text)

    ehr_commands.add_commands(add_with_config)

    p = add("serve", cmd_serve, "Serve the FHIR API under gunicorn")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--threads", type=int)

    p = add("seed", cmd_seed, "Write deterministic synthetic patients into the embedded EHR")
    p.add_argument("--patients", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--today", help="Date the data is relative to (YYYY-MM-DD; default today)")

    p = add("import", cmd_import, "Load FHIR transaction Bundles (e.g. Synthea) from files")
    p.add_argument("files", nargs="+")

    add("check-config", cmd_check_config, "Check the configuration and explain each problem")

    p = add("clients", cmd_clients, "Register, list or remove SMART apps")
    p.add_argument("action", choices=["add", "list", "remove"])
    p.add_argument("client_id_pos", nargs="?", metavar="ID", help="for remove")
    p.add_argument("--client-id")
    p.add_argument("--redirect-uri", action="append")
    p.add_argument("--launch-uri", help="where an EHR launch opens the app")
    p.add_argument("--name")
    p.add_argument("--scope", help="the scopes this app may ever get (default: any)")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--public", action="store_true")
    auth.add_argument("--secret")
    auth.add_argument("--jwks", help="file with the app's public JWKS")
    auth.add_argument("--jwks-url")

    p = add("users", cmd_users, "Add or list patient (and practitioner) sign-in accounts")
    p.add_argument("action", choices=["add", "list"])
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--patient", action="append", help="patient id (repeat for a proxy)")
    p.add_argument("--practitioner", help="practitioner id, for a clinician account")
    p.add_argument("--name")
    p.add_argument("--totp", action="store_true", help="enrol a TOTP second factor")

    p = add("launch", cmd_launch, "Create an EHR launch context and print the app launch URL")
    p.add_argument("--client-id", required=True)
    p.add_argument("--patient", required=True)
    p.add_argument("--encounter")

    p = add("token", cmd_token, "Mint an access token for a registered client (admin, for curl)")
    p.add_argument("--client-id", required=True)
    p.add_argument("--scope", required=True)
    p.add_argument("--patient")

    p = sub.add_parser("conformance", help="Check what a FHIR server really does (any server)",
                       description="Run the conformance checks against a FHIR R4 base URL")
    from conformance.cli import add_arguments, run_from_args

    add_arguments(p)
    p.set_defaults(func=run_from_args)

    p = add("demo", cmd_demo, "Seed (if empty) and serve, printing what to try")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--patients", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader went away (`... | head`): nothing left to tell it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
