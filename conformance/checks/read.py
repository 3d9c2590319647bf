"""read: read, vread, instance history, 404/410 with OperationOutcome, ETag vs versionId."""

from __future__ import annotations

from conformance.checks.util import (
    bundle,
    etag_version,
    expect_outcome,
    expect_resource,
    expect_status,
    version_of,
)
from conformance.context import RunContext
from conformance.model import SPEC, Fail, Severity, Skip, check

TYPES = ["Patient", "Observation", "Condition", "Encounter", "Practitioner", "Organization"]


def _subject(ctx: RunContext, interaction: str = "read") -> tuple[str, dict]:
    for rtype in TYPES + ctx.types():
        if ctx.supports(rtype, interaction) and ctx.supports(rtype, "search-type") \
                and ctx.samples(rtype):
            return rtype, ctx.samples(rtype)[0]
    raise Skip(f"found no resource on the server to {interaction}")


@check("read.read", "read", f"{SPEC}/http.html#read")
def read(ctx: RunContext) -> str | None:
    """GET [type]/[id] returns that resource with its id"""
    rtype, sample = _subject(ctx)
    resp = ctx.http.get(f"{rtype}/{sample['id']}")
    expect_status(resp, 200)
    body = expect_resource(resp, rtype)
    if body.get("id") != sample["id"]:
        raise Fail(f"read {rtype}/{sample['id']} returned id {body.get('id')!r}")
    return f"{rtype}/{sample['id']}"


@check("read.etag-present", "read", f"{SPEC}/http.html#versioning",
       severity=Severity.RECOMMENDED)
def etag_present(ctx: RunContext) -> str | None:
    """A read carries an ETag (W/"versionId")"""
    rtype, sample = _subject(ctx)
    resp = ctx.http.get(f"{rtype}/{sample['id']}")
    expect_status(resp, 200)
    if not resp.headers.get("etag"):
        raise Fail(f"read {rtype}/{sample['id']} has no ETag header")
    return resp.headers["etag"]


@check("read.etag-version", "read", f"{SPEC}/http.html#versioning")
def etag_version_agree(ctx: RunContext) -> str | None:
    """The ETag and meta.versionId name the same version"""
    rtype, sample = _subject(ctx)
    resp = ctx.http.get(f"{rtype}/{sample['id']}")
    expect_status(resp, 200)
    body = expect_resource(resp, rtype)
    etag = resp.headers.get("etag")
    if not etag:
        raise Skip("the read has no ETag (see read.etag-present)")
    if not etag.startswith("W/"):
        raise Fail(f"ETag {etag} is not a weak ETag W/\"versionId\"")
    if version_of(body) is None:
        raise Fail("the resource has an ETag but no meta.versionId")
    if etag_version(etag) != version_of(body):
        raise Fail(f"ETag {etag} but meta.versionId {version_of(body)!r}")
    return f"{etag} = versionId {version_of(body)}"


@check("read.vread", "read", f"{SPEC}/http.html#vread")
def vread(ctx: RunContext) -> str | None:
    """GET [type]/[id]/_history/[vid] returns that version"""
    rtype, sample = _subject(ctx, "vread")
    vid = version_of(sample)
    if not vid:
        raise Fail(f"{rtype}/{sample['id']} has no meta.versionId to vread")
    resp = ctx.http.get(f"{rtype}/{sample['id']}/_history/{vid}")
    expect_status(resp, 200)
    body = expect_resource(resp, rtype)
    if body.get("id") != sample["id"] or version_of(body) != vid:
        raise Fail(f"vread returned {body.get('id')!r} version {version_of(body)!r}")
    return None


@check("read.history", "read", f"{SPEC}/http.html#history")
def history(ctx: RunContext) -> str | None:
    """GET [type]/[id]/_history is a history Bundle of that resource's versions"""
    rtype, sample = _subject(ctx, "history-instance")
    body = bundle(ctx.http.get(f"{rtype}/{sample['id']}/_history"))
    if body.get("type") != "history":
        raise Fail(f"the history Bundle has type {body.get('type')!r}, not history")
    entries = [e.get("resource") or {} for e in body.get("entry") or []]
    if not entries:
        raise Fail("the history of an existing resource is empty")
    wrong = [r for r in entries if r and r.get("id") != sample["id"]]
    if wrong:
        raise Fail(f"the history holds other resources: {wrong[0].get('id')!r}")
    versions = [version_of(r) for r in entries if r]
    if version_of(sample) not in versions:
        raise Fail(f"the current version {version_of(sample)!r} is not in the history")
    return f"{len(entries)} versions"


@check("read.not-found", "read", f"{SPEC}/http.html#read")
def not_found(ctx: RunContext) -> str | None:
    """Reading an unknown id is 404 with an OperationOutcome"""
    rtype = next((t for t in TYPES + ctx.types() if ctx.supports(t, "read")), "Patient")
    resp = ctx.http.get(f"{rtype}/conformance-no-such-id-0")
    expect_status(resp, 404)
    expect_outcome(resp)
    return None


@check("read.gone", "read", f"{SPEC}/http.html#read")
def gone(ctx: RunContext) -> str | None:
    """Reading a deleted resource is 410 (or 404) with an OperationOutcome"""
    ctx.require_writes()
    if not ctx.supports("Observation", "create") or not ctx.supports("Observation", "delete"):
        raise Skip("the server declares no Observation create and delete")
    from conformance.checks.write import new_resource

    res = new_resource(ctx)
    rtype, rid = res["resourceType"], res["id"]
    resp = ctx.http.delete(f"{rtype}/{rid}")
    if resp.status_code not in (200, 202, 204):
        raise Skip(f"the server did not delete {rtype}/{rid} ({resp.status_code})")
    resp = ctx.http.get(f"{rtype}/{rid}")
    expect_status(resp, 410, 404)
    expect_outcome(resp)
    return "410" if resp.status_code == 410 else "404 (the server keeps no deleted history)"
