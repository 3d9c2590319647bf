"""`fhir-gateway`: serve, seed, import, check-config, demo."""

from __future__ import annotations

import argparse
import datetime as dt
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
    from fhir_gateway.app import build_adapter

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
    print(DEMO_TEXT.format(base=base, data=cfg.data_path.resolve()), flush=True)
    serve(cfg)
    return 0


DEMO_TEXT = """
FHIR R4 gateway (embedded EHR, data in {data})
  FHIR base: {base}

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fhir-gateway",
                                     description="FHIR R4 gateway for patient portals")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", help="TOML config file (or FHIR_GATEWAY_CONFIG)")
        p.set_defaults(func=func)
        return p

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

    p = add("demo", cmd_demo, "Seed (if empty) and serve, printing what to try")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--patients", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
