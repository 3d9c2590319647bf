"""`fhir-gateway capabilities` and `fhir-gateway outbox`: what a connected EHR can do, and the
writes waiting for it. Admin tools: they print ids and states, never resource contents."""

from __future__ import annotations

import argparse
import sys
import time

from adapters.base import TYPE_INTERACTIONS
from fhir_gateway.config import Config, load_config

COLUMNS = ("read", "vread", "search-type", "create", "update", "delete", "history-instance")
HEADINGS = {"search-type": "search", "history-instance": "history"}


def _ehr_config(cfg: Config, name: str | None) -> Config:
    """The configuration of the EHR called `name`: a tenant's, or the main one."""
    if name and name in cfg.tenants:
        return load_config(cfg.tenants[name])
    if name and name != cfg.fhir_rest.name:
        known = ", ".join([cfg.fhir_rest.name, *sorted(cfg.tenants)])
        print(f"no EHR called {name!r}; known: {known}", file=sys.stderr)
        raise SystemExit(2)
    return cfg


def cmd_capabilities(args: argparse.Namespace, cfg: Config) -> int:
    from fhir_gateway.ehr import build_adapter
    from fhir_gateway.operations.builtin import builtin_operations

    cfg = _ehr_config(cfg, args.ehr)
    adapter = build_adapter(cfg)
    try:
        caps = adapter.capabilities()
        specs = builtin_operations()
        if cfg.adapter.kind == "fhir_rest":
            matrix = adapter.matrix()
            found = "served" if matrix.statement_found else (
                "not served: standard R4 interactions assumed" if matrix.vendor.assume_standard
                else "not served or unreachable")
            print(f"EHR {cfg.fhir_rest.name} at {cfg.fhir_rest.base_url}")
            print(f"  vendor profile: {matrix.vendor.name} ({matrix.vendor.title}); "
                  f"CapabilityStatement: {found}; software: {matrix.software}")
            for note in matrix.vendor.notes:
                print(f"  note: {note}")
            rows = dict(matrix.rows())
        else:
            print(f"EHR: {caps.software}")
            rows = {t: {i: ("yes" if tc.allows(i) else "no") for i in TYPE_INTERACTIONS}
                    for t, tc in caps.types.items()}
        portal = sorted({t for s in specs for t, _ in (*s.needs, *(
            s.fallback.needs if s.fallback else ()))} | {s.resource_type for s in specs})
        shown = sorted(rows) if args.all else [t for t in portal if t in rows]
        width = max(len(t) for t in [*shown, "Type"]) + 2
        cells = {t: [rows[t].get(i, "-") for i in COLUMNS] for t in shown}
        widths = [max(len(HEADINGS.get(c, c)), *(len(cells[t][k]) for t in shown)) + 2
                  for k, c in enumerate(COLUMNS)]
        print()
        print("Type".ljust(width) + "".join(HEADINGS.get(c, c).ljust(w)
                                            for c, w in zip(COLUMNS, widths, strict=True)))
        for t in shown:
            print(t.ljust(width) + "".join(v.ljust(w)
                                           for v, w in zip(cells[t], widths, strict=True)))
        missing = [t for t in portal if t not in rows]
        if missing and not args.all:
            print(f"(not offered at all: {', '.join(missing)})")
        print(f"\nsystem: {', '.join(sorted(caps.system_interactions)) or 'no batch/transaction'}")
        print("\nPortal actions")
        for spec in sorted(specs, key=lambda s: (s.resource_type, s.name)):
            how, _, why = spec.path(caps)
            label = f"{spec.resource_type}/${spec.name}"
            text = {"direct": "direct", "fallback": f"fallback: {why}",
                    "unavailable": f"unavailable (501): the EHR lacks {why}"}[how]
            print(f"  {label.ljust(40)}{text}")
    finally:
        adapter.close()
    return 0


def _outbox(cfg: Config):
    from fhir_gateway.outbox import Outbox
    from smart_launch.db import make_state_engine

    return Outbox(make_state_engine(cfg.state_database_url))


def cmd_outbox(args: argparse.Namespace, cfg: Config) -> int:
    cfg = _ehr_config(cfg, args.ehr)
    outbox = _outbox(cfg)
    if args.action == "list":
        entries = outbox.list(status=args.status)
        counts = outbox.counts()
        print(", ".join(f"{k} {v}" for k, v in counts.items()))
        for e in entries:
            target = e.resource_type + (f"/{e.resource_id}" if e.resource_id else "")
            wait = max(0, int(e.next_at - time.time())) if e.status == "queued" else 0
            extra = f" next in {wait}s" if e.status == "queued" else ""
            error = f" | {e.last_error[:80]}" if e.last_error else ""
            print(f"{e.id}  {e.status:<8} {e.method:<6} {target:<40} "
                  f"attempts {e.attempts}{extra}{error}")
        return 0
    if args.action == "purge":
        if args.older_than_days is not None and args.older_than_days < 0:
            print("--older-than-days must be 0 or more", file=sys.stderr)
            return 2
        if args.older_than_days is None and cfg.outbox.keep_days <= 0:
            print("[outbox] keep_days = 0 keeps every entry: nothing purged")
            return 0
        keep = cfg.outbox.keep_days if args.older_than_days is None else args.older_than_days
        print(f"purged {outbox.purge(keep)} stored or dropped entries older than {keep:g} days")
        return 0
    if not args.id:
        print(f"outbox {args.action} needs an entry id", file=sys.stderr)
        return 2
    done = outbox.retry(args.id) if args.action == "retry" else outbox.drop(args.id)
    if not done:
        entry = outbox.get(args.id)
        state = entry.status if entry else "unknown"
        print(f"cannot {args.action} {args.id}: it is {state}", file=sys.stderr)
        return 1
    print(f"{args.action}: {args.id}")
    return 0


def add_commands(add) -> None:
    """Register the subcommands on the main parser (`add` as in fhir_gateway.cli)."""
    p = add("capabilities", cmd_capabilities,
            "Print what the EHR can do: the capability matrix and the portal actions")
    p.add_argument("--ehr", help="the EHR (fhir_rest.name, or a tenant name)")
    p.add_argument("--all", action="store_true", help="every resource type, not only the "
                   "ones the portal actions use")
    p = add("outbox", cmd_outbox, "List, retry, drop or purge writes waiting for the EHR")
    p.add_argument("action", choices=("list", "retry", "drop", "purge"))
    p.add_argument("--older-than-days", type=float,
                   help="purge: settled entries older than this (default [outbox] keep_days)")
    p.add_argument("id", nargs="?")
    p.add_argument("--status", choices=("queued", "sending", "stored", "failed", "dropped"))
    p.add_argument("--ehr", help="the EHR (fhir_rest.name, or a tenant name)")
