"""search: declared parameters on real data, reference forms, GET vs POST, paging, _include,
_sort, _summary=count, system|code tokens and date prefixes."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

from conformance.checks.util import bundle, ids, link, matches, outcome_mentions
from conformance.client import json_body
from conformance.context import RunContext
from conformance.model import SPEC, Fail, Severity, Skip, check

SEARCH = f"{SPEC}/search.html"


def _coding(element: Any) -> dict | None:
    if isinstance(element, list):
        element = element[0] if element else None
    if isinstance(element, dict):
        codings = element.get("coding") or []
        for c in codings:
            if c.get("code"):
                return c
    return None


def _token(element: Any) -> str | None:
    c = _coding(element)
    if c:
        return f"{c['system']}|{c['code']}" if c.get("system") else c["code"]
    return None


def _ref(element: Any) -> str | None:
    if isinstance(element, list):
        element = element[0] if element else None
    if isinstance(element, dict):
        return element.get("reference")
    return None


def _first_name(r: dict, part: str) -> str | None:
    names = r.get("name") or []
    if not names:
        return None
    if part == "family":
        return names[0].get("family")
    given = names[0].get("given") or []
    return given[0] if given else None


def _identifier(r: dict) -> str | None:
    for ident in r.get("identifier") or []:
        if ident.get("value"):
            return (f"{ident['system']}|{ident['value']}" if ident.get("system")
                    else ident["value"])
    return None


def _plain(key: str) -> Callable[[dict], str | None]:
    return lambda r: r.get(key) if isinstance(r.get(key), str) else None


# (type or "*", parameter) -> the value a resource holds for it, and a value nothing holds.
EXTRACT: dict[tuple[str, str], Callable[[dict], str | None]] = {
    ("*", "_id"): lambda r: r.get("id"),
    ("*", "status"): _plain("status"),
    ("*", "identifier"): _identifier,
    ("*", "patient"): lambda r: _ref(r.get("subject") or r.get("patient")),
    ("*", "subject"): lambda r: _ref(r.get("subject")),
    ("*", "code"): lambda r: _token(r.get("code")),
    ("*", "category"): lambda r: _token(r.get("category")),
    ("*", "encounter"): lambda r: _ref(r.get("encounter")),
    ("Patient", "family"): lambda r: _first_name(r, "family"),
    ("Patient", "given"): lambda r: _first_name(r, "given"),
    ("Patient", "name"): lambda r: _first_name(r, "family"),
    ("Practitioner", "family"): lambda r: _first_name(r, "family"),
    ("Practitioner", "name"): lambda r: _first_name(r, "family"),
    ("Patient", "gender"): _plain("gender"),
    ("Patient", "birthdate"): _plain("birthDate"),
    ("Observation", "date"): _plain("effectiveDateTime"),
    ("Condition", "clinical-status"): lambda r: _token(r.get("clinicalStatus")),
    ("AllergyIntolerance", "clinical-status"): lambda r: _token(r.get("clinicalStatus")),
    ("MedicationRequest", "intent"): _plain("intent"),
    ("MedicationRequest", "authoredon"): _plain("authoredOn"),
    ("Immunization", "vaccine-code"): lambda r: _token(r.get("vaccineCode")),
    ("Immunization", "date"): _plain("occurrenceDateTime"),
    ("*", "performer"): lambda r: _ref(r.get("performer")),
    ("*", "requester"): lambda r: _ref(r.get("requester")),
    ("*", "based-on"): lambda r: _ref(r.get("basedOn")),
    ("*", "author"): lambda r: _ref(r.get("author")),
    ("*", "specialty"): lambda r: _token(r.get("specialty")),
    ("*", "service-type"): lambda r: _token(r.get("serviceType")),
    ("Slot", "schedule"): lambda r: _ref(r.get("schedule")),
    ("Slot", "start"): _plain("start"),
    ("Task", "focus"): lambda r: _ref(r.get("focus")),
    ("Task", "authored-on"): _plain("authoredOn"),
    ("Communication", "part-of"): lambda r: _ref(r.get("partOf")),
    ("Communication", "sent"): _plain("sent"),
    ("Invoice", "account"): lambda r: _ref(r.get("account")),
    ("DiagnosticReport", "date"): _plain("effectiveDateTime"),
    ("Condition", "onset-date"): _plain("onsetDateTime"),
    ("DocumentReference", "type"): lambda r: _token(r.get("type")),
    ("DocumentReference", "date"): _plain("date"),
    ("Encounter", "type"): lambda r: _token(r.get("type")),
    ("Encounter", "class"): lambda r: (f"{r['class'].get('system')}|{r['class'].get('code')}"
                                       if isinstance(r.get("class"), dict)
                                       and r["class"].get("code") else None),
}
NONE_VALUE = {"token": "conformance-none", "string": "zzconformancenone",
              "reference": "Patient/conformance-none", "date": "1801-01-01"}


STANDARD_TYPES = {"date": "date", "birthdate": "date", "authoredon": "date",
                  "authored-on": "date", "start": "date", "sent": "date", "onset-date": "date",
                  "patient": "reference", "subject": "reference", "encounter": "reference",
                  "performer": "reference", "requester": "reference", "based-on": "reference",
                  "author": "reference", "schedule": "reference", "focus": "reference",
                  "part-of": "reference", "account": "reference",
                  "family": "string", "given": "string", "name": "string"}


# Generic parameters tried on a server that declares nothing: these are standard R4 wherever
# the element they read exists (others, like service-type, are standard only on some types).
SAFE_GENERIC = {"_id", "status", "identifier", "patient", "subject", "code", "category",
                "encounter"}


def _standard(rtype: str) -> dict[str, str]:
    """With no CapabilityStatement, the standard R4 parameters the runner knows for a type."""
    names = {n for (t, n) in EXTRACT if t == rtype or (t == "*" and n in SAFE_GENERIC)}
    return {n: STANDARD_TYPES.get(n, "token") for n in sorted(names)}


def _extractor(rtype: str, name: str) -> Callable[[dict], str | None] | None:
    return EXTRACT.get((rtype, name)) or EXTRACT.get(("*", name))


def _search(ctx: RunContext, rtype: str, params: dict[str, str]) -> dict:
    return bundle(ctx.http.get(rtype, params=params))


@check("search.params-on-data", "search", f"{SEARCH}#ptypes")
def params_on_data(ctx: RunContext) -> str | None:
    """Each declared parameter finds a resource by its own value, and not by another value"""
    tried = []
    for rtype in ctx.types():
        if not ctx.supports(rtype, "search-type"):
            continue
        declared = {p.get("name"): p.get("type") for p in ctx.search_params(rtype)} or (
            _standard(rtype) if not ctx.capability else {})
        candidates = [(n, t) for n, t in declared.items() if _extractor(rtype, n)
                      and t in NONE_VALUE]
        if not candidates:
            continue
        samples = ctx.samples(rtype)
        if not samples:
            continue
        for name, ptype in candidates:
            sample = next((s for s in samples if _extractor(rtype, name)(s)), None)
            if sample is None:
                continue
            value = _extractor(rtype, name)(sample)
            base = {"_id": sample["id"]} if name != "_id" else {}
            hit = _search(ctx, rtype, {**base, name: value})
            if sample["id"] not in [r.get("id") for r in matches(hit, rtype)]:
                raise Fail(f"{rtype}?{name}={value} did not find {rtype}/{sample['id']}, "
                           "which holds that value")
            if name == "_id":
                none = {"_id": "conformance-none"}
            elif ptype == "reference" and "/" in value:
                none = {**base, name: value.rsplit("/", 2)[-2] + "/conformance-none"}
            else:
                none = {**base, name: NONE_VALUE[ptype]}
            miss = _search(ctx, rtype, none)
            if matches(miss, rtype):
                raise Fail(f"{rtype}?{name}={none[name]} still found "
                           f"{ids(matches(miss, rtype))[:3]}: the parameter is ignored")
            tried.append(f"{rtype}.{name}")
    if not tried:
        raise Skip("no declared parameter could be tried on data found on the server")
    more = f", and {len(tried) - 12} more" if len(tried) > 12 else ""
    return f"{len(tried)} parameters: " + ", ".join(tried[:12]) + more


def _compartment_sample(ctx: RunContext) -> tuple[str, str]:
    """A (type, patient id) with data, for searches by patient (checks other than
    search.reference-forms search with `patient=Patient/[id]`, the form every server takes)."""
    for rtype in ("Observation", "Condition", "Encounter", "MedicationRequest",
                  "AllergyIntolerance", "Immunization"):
        if not ctx.supports(rtype, "search-type"):
            continue
        names = {p.get("name") for p in ctx.search_params(rtype)}
        if ctx.capability and "patient" not in names:
            continue
        for res in ctx.samples(rtype):
            ref = _ref(res.get("subject") or res.get("patient")) or ""
            if ref.startswith("Patient/"):
                return rtype, ref.split("/", 1)[1]
    raise Skip("found no resource with a patient reference")


@check("search.reference-forms", "search", f"{SEARCH}#reference")
def reference_forms(ctx: RunContext) -> str | None:
    """patient=[id] and patient=Patient/[id] find the same resources"""
    rtype, pid = _compartment_sample(ctx)
    a = ids(matches(_search(ctx, rtype, {"patient": pid, "_count": "50"}), rtype))
    b = ids(matches(_search(ctx, rtype, {"patient": f"Patient/{pid}", "_count": "50"}), rtype))
    if not a:
        raise Fail(f"{rtype}?patient={pid} found nothing, though {rtype} data names that "
                   "patient")
    if sorted(a) != sorted(b):
        raise Fail(f"{rtype}?patient={pid} found {len(a)}, patient=Patient/{pid} found "
                   f"{len(b)}")
    return f"{len(a)} {rtype} each way"


@check("search.get-post", "search", f"{SEARCH}#Introduction")
def get_post(ctx: RunContext) -> str | None:
    """GET [type]?params and POST [type]/_search with a form body agree"""
    rtype, pid = _compartment_sample(ctx)
    params = {"patient": f"Patient/{pid}", "_count": "20"}
    a = ids(matches(_search(ctx, rtype, params), rtype))
    resp = ctx.http.post(f"{rtype}/_search", data=params)
    b = ids(matches(bundle(resp), rtype))
    if not a and not b:
        raise Skip(f"{rtype}?patient=Patient/{pid} found nothing to compare")
    if sorted(a) != sorted(b):
        raise Fail(f"GET found {len(a)} {rtype}, POST _search found {len(b)}")
    return f"{len(a)} {rtype} each way"


@check("search.count", "search", f"{SPEC}/search.html#count")
def count(ctx: RunContext) -> str | None:
    """_count limits a page, and a limited page links to the next"""
    rtype, pid = _compartment_sample(ctx)
    full = matches(_search(ctx, rtype, {"patient": f"Patient/{pid}", "_count": "50"}), rtype)
    if len(full) < 3:
        raise Skip(f"fewer than 3 {rtype} for one patient to page through")
    page = _search(ctx, rtype, {"patient": f"Patient/{pid}", "_count": "2"})
    got = matches(page, rtype)
    if len(got) > 2:
        raise Fail(f"_count=2 returned {len(got)} matches")
    if not link(page, "next"):
        raise Fail(f"_count=2 of {len(full)}+ matches has no next link")
    return None


def _walk(ctx: RunContext, first: dict, rtype: str) -> tuple[list[str], int]:
    seen = ids(matches(first, rtype))
    page, pages = first, 1
    while (nxt := link(page, "next")) and pages < ctx.options.max_pages * 5:
        page = bundle(ctx.http.get(nxt))
        seen += ids(matches(page, rtype))
        pages += 1
    if link(page, "next"):
        raise Skip(f"more than {pages} pages; stopped walking")
    return seen, pages


@check("search.paging", "search", f"{SPEC}/http.html#paging")
def paging(ctx: RunContext) -> str | None:
    """Following next links walks every match once: no repeats, no gaps, to the end"""
    rtype, pid = _compartment_sample(ctx)
    params = {"patient": f"Patient/{pid}"}
    whole = _search(ctx, rtype, {**params, "_count": "500"})
    everything = ids(matches(whole, rtype))
    if link(whole, "next") or len(everything) < 4:
        raise Skip(f"{len(everything)} {rtype} for one patient: not a walk of a few pages")
    size = max(2, math.ceil(len(everything) / 8))
    seen, pages = _walk(ctx, _search(ctx, rtype, {**params, "_count": str(size)}), rtype)
    repeats = sorted({r for r in seen if seen.count(r) > 1})
    if repeats:
        raise Fail(f"walking {pages} pages of {size} repeated {len(repeats)}: {repeats[:3]}")
    gaps = sorted(set(everything) - set(seen))
    if gaps:
        raise Fail(f"walking {pages} pages of {size} missed {len(gaps)}: {gaps[:3]}")
    extra = sorted(set(seen) - set(everything))
    if extra:
        raise Fail(f"the pages hold {len(extra)} resources the one-page search did not")
    total = whole.get("total")
    if isinstance(total, int) and total != len(everything):
        raise Fail(f"Bundle.total is {total} but {len(everything)} matches came back")
    return f"{len(seen)} {rtype} in {pages} pages of {size}"


INCLUDE_ELEMENT = {"subject": "subject", "patient": "subject", "medication":
                   "medicationReference", "encounter": "encounter", "requester": "requester",
                   "performer": "performer", "general-practitioner": "generalPractitioner",
                   "organization": "managingOrganization"}


@check("search.include", "search", f"{SEARCH}#include")
def include(ctx: RunContext) -> str | None:
    """_include adds the referenced resources, marked search.mode = include"""
    for rtype in ctx.types():
        res_decl = ctx.declared(rtype) or {}
        declared = res_decl.get("searchInclude") or (
            [] if ctx.capability else [f"{rtype}:subject", f"{rtype}:patient"])
        for inc in declared:
            parts = inc.split(":")
            if len(parts) < 2 or parts[1] not in INCLUDE_ELEMENT:
                continue
            element = INCLUDE_ELEMENT[parts[1]]
            holders = [s for s in ctx.samples(rtype) if _ref(s.get(element))]
            if not holders:
                continue
            sample = holders[0]
            want = _ref(sample.get(element))
            body = _search(ctx, rtype, {"_id": sample["id"], "_include": inc})
            included = [f"{e['resource'].get('resourceType')}/{e['resource'].get('id')}"
                        for e in body.get("entry") or [] if e.get("resource")
                        and (e.get("search") or {}).get("mode") == "include"]
            if want.split("/")[-2:] and "/".join(want.split("/")[-2:]) not in included:
                raise Fail(f"{rtype}?_id={sample['id']}&_include={inc} did not include "
                           f"{want} (included: {included[:3]})")
            return f"{inc} included {want}"
    raise Skip("no declared searchInclude could be tried on data found on the server")


def _when(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    text = value if "T" in value else value + "T00:00:00+00:00"
    text = text.replace("Z", "+00:00")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@check("search.sort", "search", f"{SEARCH}#sort")
def sort(ctx: RunContext) -> str | None:
    """_sort=date and _sort=-date order the matches by date"""
    if ctx.capability and not any(p.get("name") == "date"
                                  for p in ctx.search_params("Observation")):
        raise Skip("Observation declares no date parameter")
    rtype, pid = _compartment_sample(ctx)
    if rtype != "Observation":
        raise Skip("no Observations to sort")
    for key, reverse in (("date", False), ("-date", True)):
        found = matches(_search(ctx, "Observation", {"patient": f"Patient/{pid}", "_sort": key,
                                                     "_count": "50"}), "Observation")
        dates = [_when(o.get("effectiveDateTime")) for o in found]
        dates = [d for d in dates if d]
        if len(dates) < 2:
            raise Skip("fewer than 2 dated Observations")
        if dates != sorted(dates, reverse=reverse):
            raise Fail(f"_sort={key} returned dates out of order: "
                       f"{[d.isoformat() for d in dates[:4]]}")
    return None


@check("search.summary-count", "search", f"{SEARCH}#summary")
def summary_count(ctx: RunContext) -> str | None:
    """_summary=count gives the total and no resources"""
    rtype, pid = _compartment_sample(ctx)
    whole = matches(_search(ctx, rtype, {"patient": f"Patient/{pid}", "_count": "500"}), rtype)
    if not whole:
        raise Skip(f"{rtype}?patient=Patient/{pid} found nothing to count")
    body = _search(ctx, rtype, {"patient": f"Patient/{pid}", "_summary": "count"})
    if body.get("total") != len(whole):
        raise Fail(f"_summary=count says total {body.get('total')!r}, the search found "
                   f"{len(whole)}")
    if matches(body, rtype):
        raise Fail(f"_summary=count returned {len(matches(body, rtype))} resources")
    return f"total {len(whole)}"


@check("search.token-system", "search", f"{SEARCH}#token")
def token_system(ctx: RunContext) -> str | None:
    """code=system|code matches that coding only; another system matches nothing"""
    for rtype in ("Observation", "Condition", "Patient"):
        param = "identifier" if rtype == "Patient" else "code"
        if not ctx.supports(rtype, "search-type"):
            continue
        for sample in ctx.samples(rtype):
            value = (_identifier(sample) if param == "identifier"
                     else _token(sample.get("code")))
            if not value or "|" not in value:
                continue
            system, code = value.split("|", 1)
            found = matches(_search(ctx, rtype, {param: value, "_count": "50"}), rtype)
            if sample["id"] not in [r["id"] for r in found]:
                raise Fail(f"{rtype}?{param}={value} did not find {rtype}/{sample['id']}")
            other = matches(_search(ctx, rtype, {"_id": sample["id"],
                                                 param: f"http://example.org/other|{code}"}),
                            rtype)
            if other:
                raise Fail(f"{rtype}?{param}=http://example.org/other|{code} matched "
                           f"{rtype}/{sample['id']}, whose system is {system}")
            return f"{rtype}?{param}={value}"
    raise Skip("found no coded data with a system")


@check("search.date-prefixes", "search", f"{SEARCH}#prefix")
def date_prefixes(ctx: RunContext) -> str | None:
    """ge/le/eq include a resource's own date; gt/lt exclude it"""
    for rtype, param, element in (("Observation", "date", "effectiveDateTime"),
                                  ("Patient", "birthdate", "birthDate"),
                                  ("Immunization", "date", "occurrenceDateTime")):
        if ctx.capability and not any(p.get("name") == param
                                      for p in ctx.search_params(rtype)):
            continue
        sample = next((s for s in ctx.samples(rtype) if isinstance(s.get(element), str)),
                      None)
        if sample is None:
            continue
        value = sample[element]
        for prefix, expect in (("eq", True), ("ge", True), ("le", True), ("gt", False),
                               ("lt", False)):
            found = matches(_search(ctx, rtype, {"_id": sample["id"],
                                                 param: prefix + value}), rtype)
            if bool(found) != expect:
                raise Fail(f"{rtype}?{param}={prefix}{value} "
                           f"{'missed' if expect else 'matched'} {rtype}/{sample['id']}, "
                           f"whose {element} is {value}")
        return f"{rtype}.{param} around {value}"
    raise Skip("found no dated data to search")


@check("search.unknown-param-reported", "search", f"{SEARCH}#errors",
       severity=Severity.RECOMMENDED)
def unknown_param(ctx: RunContext) -> str | None:
    """An unknown parameter is an error under handling=strict, and not claimed as used when
    lenient"""
    rtype = next((t for t in ctx.types() if ctx.supports(t, "search-type")), "Patient")
    probe = {"conformance-unknown": "x"}
    resp = ctx.http.get(rtype, params=probe, headers={"Prefer": "handling=strict"})
    if resp.status_code == 401 and "authorization" not in resp.request.headers:
        raise Skip("the server wants a token (401 without one): give --token or "
                   "--smart-client")
    body = json_body(resp)
    if resp.status_code == 200 and isinstance(body, dict):
        raise Fail(f"{rtype}?conformance-unknown=x with Prefer: handling=strict was answered "
                   "200, as if the parameter meant something")
    if resp.status_code != 400:
        raise Fail(f"an unknown parameter was answered {resp.status_code}")
    # Lenient: ignoring it is allowed, but the self link says which parameters were used
    # (or an OperationOutcome in the Bundle says it was not).
    resp = ctx.http.get(rtype, params=probe, headers={"Prefer": "handling=lenient"})
    body = json_body(resp)
    if resp.status_code != 200 or not isinstance(body, dict):
        return f"400 under handling=strict; {resp.status_code} when lenient"
    if "conformance-unknown" in (link(body, "self") or "") and \
            not outcome_mentions(body, "conformance-unknown"):
        raise Fail(f"under handling=lenient {rtype}?conformance-unknown=x was ignored, but the "
                   "self link names it as used and no OperationOutcome says otherwise")
    return "400 under handling=strict; left out of the self link when lenient"
