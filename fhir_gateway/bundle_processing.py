"""Batch and transaction Bundles posted to the FHIR base.

A transaction is checked whole first (every entry's URL, method and resource), then handed to the
adapter as one atomic unit: if anything fails, nothing is stored and the client gets the one
error with the entry it came from. A batch runs each entry on its own through
`FhirService.handle`, each with its own status.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

from adapters.base import BundleEntryRequest, SearchPage, WriteResult, assign_write_id
from adapters.errors import FhirError, HeldBack, Invalid, PartialResult, UpstreamUnavailable
from fhir_gateway import bundles
from fhir_gateway.errors import outcome_for, status_for
from fhir_gateway.request import FhirRequest, FhirResponse, parse_etag
from fhir_gateway.service import FhirService, version_headers
from fhir_gateway.validation import validate_resource

METHODS = ("GET", "POST", "PUT", "DELETE")
REASONS = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}


def _split_url(url: str, where: str) -> tuple[str, list[str], list[tuple[str, str]]]:
    parts = urlsplit(url)
    path = parts.path.strip("/")
    if parts.scheme or parts.netloc:
        # An absolute URL must point into this server's base; keep what follows /fhir/.
        path = path.split("fhir/", 1)[-1] if "fhir/" in path else path
    segments = [s for s in path.split("/") if s]
    if not segments:
        raise Invalid(f"{where}.request.url {url!r} names no resource type",
                      expression=f"{where}.request.url")
    try:
        params = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        raise Invalid(f"{where}.request.url has a malformed query",
                      expression=f"{where}.request.url") from None
    return segments[0], segments[1:], params


_VERSION = re.compile(r"[A-Za-z0-9\-.]{1,64}\Z")  # FHIR id syntax, as a version id has


def _entries(bundle: dict, limit: int) -> list[dict]:
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise Invalid("Bundle.entry must be a list", expression="Bundle.entry")
    if len(entries) > limit:
        raise Invalid(f"The Bundle has {len(entries)} entries; the limit is {limit}",
                      expression="Bundle.entry", code="too-costly")
    return entries


def to_request(entry: dict, where: str) -> FhirRequest:
    """A Bundle entry as the FhirRequest it stands for; Invalid when it stands for none."""
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        raise Invalid(f"{where} has no request", expression=f"{where}.request")
    req = entry["request"]
    method = req.get("method")
    if method not in METHODS:
        raise Invalid(f"{where}.request.method must be one of {', '.join(METHODS)}",
                      expression=f"{where}.request.method")
    if not isinstance(req.get("url"), str):
        raise Invalid(f"{where}.request.url is missing", expression=f"{where}.request.url")
    rtype, rest, params = _split_url(req["url"], where)
    for name in ("ifMatch", "ifNoneExist"):
        if req.get(name) is not None and not isinstance(req[name], str):
            raise Invalid(f"{where}.request.{name} must be a string",
                          expression=f"{where}.request.{name}")
    if_match = parse_etag(req.get("ifMatch"))
    if if_match is not None and not _VERSION.match(if_match):
        raise Invalid(f"{where}.request.ifMatch must be an ETag such as W/\"3\"",
                      expression=f"{where}.request.ifMatch")
    fr = FhirRequest(interaction="", resource_type=rtype, params=params,
                     body=entry.get("resource"), if_match=if_match,
                     if_none_exist=req.get("ifNoneExist"))
    if method == "GET":
        if not rest:
            fr.interaction = "search-type"
        elif len(rest) == 1:
            fr.interaction, fr.id = "read", rest[0]
        elif len(rest) == 3 and rest[1] == "_history":
            fr.interaction, fr.id, fr.version_id = "vread", rest[0], rest[2]
        elif len(rest) == 2 and rest[1] == "_history":
            fr.interaction, fr.id = "history-instance", rest[0]
    elif method == "POST" and not rest:
        fr.interaction = "create"
    elif method == "PUT" and len(rest) == 1:
        fr.interaction, fr.id = "update", rest[0]
    elif method == "DELETE" and len(rest) == 1:
        fr.interaction, fr.id = "delete", rest[0]
    if not fr.interaction:
        raise Invalid(f"{where}: {method} {req['url']} is not an interaction this server runs",
                      expression=f"{where}.request.url")
    return fr


def process(service: FhirService, bundle: dict, base: str, prefer: dict[str, str],
            principal: object | None = None) -> dict:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise Invalid("POST to the base takes a Bundle", expression="resourceType")
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise Invalid(f"Bundle.type must be transaction or batch, not {kind!r}",
                      expression="Bundle.type")
    entries = _entries(bundle, service.limits.max_bundle_entries)
    if kind == "batch":
        return _batch(service, entries, base, prefer, principal)
    return _transaction(service, entries, base, principal)


def _batch(service: FhirService, entries: list[dict], base: str,
           prefer: dict[str, str], principal: object | None) -> dict:
    out = []
    for i, entry in enumerate(entries):
        try:
            req = to_request(entry, f"Bundle.entry[{i}]")
            req.prefer = prefer
            req.principal = principal
            resp = service.handle(req, base)
            out.append(_response_entry(resp))
        except FhirError as exc:
            out.append({"response": {"status": str(status_for(exc)),
                                     "outcome": outcome_for(exc)}})
    return {"resourceType": "Bundle", "type": "batch-response", "entry": out}


def _response_entry(resp: FhirResponse) -> dict:
    response = {"status": REASONS.get(resp.status, str(resp.status))}
    for header, key in (("Location", "location"), ("ETag", "etag")):
        if header in resp.headers:
            response[key] = resp.headers[header]
    entry: dict = {"response": response}
    if resp.resource is not None:
        entry["resource"] = resp.resource
        last = (resp.resource.get("meta") or {}).get("lastUpdated")
        if last:
            response["lastModified"] = last
    return entry


def _transaction(service: FhirService, entries: list[dict], base: str,
                 principal: object | None) -> dict:
    try:
        return _run_transaction(service, entries, base, principal)
    except FhirError as exc:  # one wording per outcome, whatever failed
        if isinstance(exc, PartialResult):
            said = "Transaction failed, and the EHR may hold part of it"
        elif isinstance(exc, UpstreamUnavailable) and not isinstance(exc, HeldBack):
            said = "Transaction failed: the EHR did not answer, so whether it was stored is " \
                "not known"
        else:
            said = "Transaction failed, nothing was stored"
        exc.diagnostics = f"{said}: {exc.diagnostics}"
        raise


def _run_transaction(service: FhirService, entries: list[dict], base: str,
                     principal: object | None) -> dict:
    work: list[BundleEntryRequest] = []
    decisions = []
    seen_urls: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"Bundle.entry[{i}]"
        req = to_request(entry, where)
        req.principal = principal
        interaction = req.interaction
        service.type_capability(req.resource_type, interaction)
        decision = service.decide(req)
        decisions.append(decision)
        full_url = entry.get("fullUrl")
        if full_url is not None:
            if not isinstance(full_url, str) or full_url in seen_urls:
                raise Invalid(f"{where}.fullUrl {full_url!r} is missing or repeated",
                              expression=f"{where}.fullUrl")
            seen_urls.add(full_url)
        item = BundleEntryRequest(method=entry["request"]["method"],
                                  resource_type=req.resource_type, full_url=full_url,
                                  if_match=req.if_match)
        if interaction in ("create", "update"):
            body = validate_resource(req.body, req.resource_type, where=f"{where}.resource")
            service.check_write(decision, body)
            if interaction == "update":
                item.id = service.check_id(req.id)
                if body.get("id") != item.id:
                    raise Invalid(f"{where}: the resource id does not match the URL",
                                  expression=f"{where}.resource.id")
                if decision is not None:
                    service.visible_for_write(decision, req.resource_type, item.id)
            else:
                body = {k: v for k, v in body.items() if k != "id"}
                if req.if_none_exist:
                    item.if_none_exist = service.condition(
                        req.resource_type, req.if_none_exist, f"{where}.request.ifNoneExist",
                        decision.narrowing if decision else ())
                elif service.write_ids(req.resource_type):  # found again if its answer is lost
                    item.write_id = assign_write_id(body)
                    item.if_none_exist = service.write_condition(req.resource_type, item.write_id)
            item.resource = body
        elif interaction == "delete":
            item.id = service.check_id(req.id)
            if decision is not None:
                service.visible_for_write(decision, req.resource_type, item.id)
        elif interaction == "read":
            item.id = service.check_id(req.id)
            if decision is not None:  # checked before anything commits
                service.visible_for_write(decision, req.resource_type, item.id)
        elif interaction == "search-type":
            params = req.params + (decision.narrowing if decision else [])
            item.query = service.search_query(req.resource_type, params, True).query
            item.url_query = entry["request"]["url"].partition("?")[2]
        else:
            raise Invalid(f"{where}: {interaction} cannot run inside a transaction",
                          expression=f"{where}.request")
        work.append(item)
    results = service.transaction(work, tuple(d.patient for d in decisions if d is not None))
    out = []
    for item, result, decision in zip(work, results, decisions, strict=True):
        if decision is not None:
            result = _screen(service, principal, decision, item, result)
        out.append(_transaction_entry(item, result, base))
    return {"resourceType": "Bundle", "type": "transaction-response", "entry": out}


def _screen(service: FhirService, principal, decision, item: BundleEntryRequest,
            result: object) -> object:
    """Hide from a transaction's GET entries what the caller may not see."""
    if isinstance(result, SearchPage):
        result.resources = [r for r in result.resources if decision.permits(r)]
        result.included = service.permitted_includes(principal, result.included)[0]
    elif isinstance(result, dict) and not service.allows(decision, result):
        raise FhirService.hidden(item.resource_type, item.id or "")
    return result


def _transaction_entry(item: BundleEntryRequest, result: object, base: str) -> dict:
    if isinstance(result, WriteResult):
        if result.resource is None:
            return {"response": {"status": "204 No Content"}}
        res = result.resource
        status = "201 Created" if result.created else "200 OK"
        headers = version_headers(res)
        return {"fullUrl": f"{base}/{res['resourceType']}/{res['id']}", "response": {
            "status": status,
            "location": f"{res['resourceType']}/{res['id']}/_history/{res['meta']['versionId']}",
            "etag": headers.get("ETag"), "lastModified": res["meta"]["lastUpdated"]}}
    if isinstance(result, SearchPage):
        self_url = f"{base}/{item.resource_type}" + (f"?{item.url_query}" if item.url_query
                                                      else "")
        bundle = bundles.searchset(base, result, self_url, None, None, [])
        return {"resource": bundle, "response": {"status": "200 OK"}}
    return {"resource": result, "response": {"status": "200 OK"}}
