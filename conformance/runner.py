"""Run the checks: reach the server, sign in if asked, run each check, clean up."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from conformance.client import Http, is_json_type, json_body
from conformance.context import Options, RunContext, Session
from conformance.model import CannotRun, Check, Fail, Result, Severity, Skip, Status, all_checks

EVIDENCE_KEPT = 6
STOPPED_AFTER = 3  # checks in a row that could not reach the server: the run is over


@dataclass
class RunReport:
    base: str
    started: str
    finished: str = ""
    results: list[Result] = field(default_factory=list)
    software: str = ""
    fhir_version: str = ""

    @property
    def required_failures(self) -> list[Result]:
        return [r for r in self.results if r.check.severity is Severity.REQUIRED
                and r.status in (Status.FAIL, Status.ERROR)]

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in Status}
        for r in self.results:
            out[r.status.value] += 1
        return out

    def exit_code(self) -> int:
        return 1 if self.required_failures else 0


def select(groups: list[str] | None, checks: list[Check] | None = None) -> list[Check]:
    checks = checks if checks is not None else all_checks()
    if not groups:
        return checks
    known = {c.group for c in checks}
    unknown = [g for g in groups if g not in known]
    if unknown:
        raise CannotRun(f"unknown group(s) {', '.join(unknown)}; known: "
                        + ", ".join(sorted(known)))
    return [c for c in checks if c.group in groups]


def preflight(ctx: RunContext) -> None:
    """The server must answer /metadata with FHIR JSON; anything else ends the run (exit 2)."""
    base = ctx.options.base
    try:
        resp = ctx.http.get("metadata")
    except httpx.HTTPError as exc:
        raise CannotRun(f"cannot reach {base}: {type(exc).__name__}: {exc}".strip()) from None
    ctx.metadata_exchange = ctx.http.last
    body = json_body(resp)
    ctype = resp.headers.get("content-type", "")
    if not isinstance(body, dict) or "resourceType" not in body:
        what = "invalid JSON" if is_json_type(ctype) else f"{ctype or 'no content type'}"
        raise CannotRun(f"{base}/metadata answered {resp.status_code} with {what}, "
                        "not FHIR JSON: is this a FHIR base URL?")
    if body["resourceType"] == "CapabilityStatement":
        ctx.capability = body
    elif resp.status_code in (401, 403) and ctx.options.token is None:
        raise CannotRun(f"{base}/metadata needs authorization ({resp.status_code}); give "
                        "--token or --smart-client")


def sign_in(ctx: RunContext) -> None:
    """Turn --token/--token2 or --smart-client logins into sessions."""
    from conformance import smart_client

    opts = ctx.options
    if opts.smart_client:
        if not opts.patient_logins:
            raise CannotRun("--smart-client needs at least one --patient-login USER:PASSWORD")
        try:
            ctx.smart_config = smart_client.discover(ctx.http)
            for login in opts.patient_logins[:2]:
                ctx.sessions.append(smart_client.launch(ctx.http, ctx.smart_config, opts,
                                                        login))
        except smart_client.LaunchError as exc:
            raise CannotRun(f"SMART launch failed: {exc}") from None
        except httpx.HTTPError as exc:
            raise CannotRun(f"SMART launch failed: {type(exc).__name__}: {exc}") from None
    else:
        if opts.token:
            ctx.sessions.append(Session(opts.token, patient=opts.patient))
        if opts.token2:
            ctx.sessions.append(Session(opts.token2, patient=opts.patient2))
    if ctx.sessions:
        ctx.http.token = ctx.sessions[0].access_token


def run_check(ctx: RunContext, chk: Check) -> Result:
    ctx.http.sink = []
    started = time.perf_counter()
    transport = False
    try:
        note = chk.func(ctx)
        status, message = Status.PASS, note or ""
    except Fail as exc:
        status, message = Status.FAIL, str(exc)
    except Skip as exc:
        status, message = Status.SKIP, str(exc)
    except httpx.TransportError as exc:
        status, message = Status.ERROR, f"{type(exc).__name__}: {exc}"
        transport = True
    except httpx.HTTPError as exc:
        status, message = Status.ERROR, f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - a bug or a surprise is recorded, not raised
        status, message = Status.ERROR, f"{type(exc).__name__}: {exc}"
    ctx.notes["transport_errors"] = ctx.notes.get("transport_errors", 0) + 1 if transport \
        else 0
    evidence = ctx.http.sink[-EVIDENCE_KEPT:]
    ctx.http.sink = []
    return Result(chk, status, message, evidence, (time.perf_counter() - started) * 1000)


def cleanup(ctx: RunContext) -> None:
    """Delete what the run created, newest first, where the server allows."""
    for ref in reversed(ctx.created):
        try:
            ctx.http.delete(ref)
        except httpx.HTTPError:
            pass
    ctx.created.clear()


def run(options: Options, *, progress: Callable[[int, int, Result], None] | None = None,
        checks: list[Check] | None = None) -> RunReport:
    """Run the selected checks against `options.base`. Raises CannotRun for exit 2."""
    chosen = select(options.groups, checks)
    http = Http(options.base, timeout=options.timeout)
    http.secrets = {s for s in (options.client_secret, options.token, options.token2) if s}
    ctx = RunContext(options, http)

    def collect(resp: httpx.Response, ex) -> None:
        if resp.status_code >= 400 and ex.url.startswith(options.base + "/") and \
                "/.well-known/" not in ex.url:
            ctx.errors.append((resp.status_code, _is_outcome(resp), ex))
        body = json_body(resp) if is_json_type(resp.headers.get("content-type", "")) else None
        for res in _resources(body):
            ctx.seen.append((res, ex))

    report = RunReport(options.base, _now())
    try:
        preflight(ctx)
        sign_in(ctx)
        http.on_response = collect
        soft = (ctx.capability or {}).get("software") or {}
        report.software = " ".join(filter(None, [soft.get("name"), soft.get("version")]))
        report.fhir_version = (ctx.capability or {}).get("fhirVersion", "")
        for i, chk in enumerate(chosen, 1):
            result = run_check(ctx, chk)
            report.results.append(result)
            if progress:
                progress(i, len(chosen), result)
            if ctx.notes.get("transport_errors", 0) >= STOPPED_AFTER:
                raise CannotRun(f"{options.base} stopped answering during the run "
                                f"({result.message})")
    finally:
        try:
            cleanup(ctx)
        finally:
            http.close()
    report.finished = _now()
    return report


def _is_outcome(resp: httpx.Response) -> bool:
    body = json_body(resp)
    return (is_json_type(resp.headers.get("content-type", "")) and isinstance(body, dict)
            and body.get("resourceType") == "OperationOutcome" and bool(body.get("issue")))


def _resources(body) -> list[dict]:
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        return []
    out = [body]
    if body["resourceType"] == "Bundle":
        for entry in body.get("entry") or []:
            out.extend(_resources((entry or {}).get("resource")))
        out[0] = {k: v for k, v in body.items() if k != "entry"}
    return out


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
