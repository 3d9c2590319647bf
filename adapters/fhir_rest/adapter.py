"""`FhirRestAdapter`: the gateway as a façade over any EHR's FHIR R4 REST API.

Reads and searches are forwarded JSON in, JSON out (no model validation on the read path),
through the read-through cache; the EHR's paging links become sealed cursors and its absolute
references become relative ones, so apps never learn upstream addresses. Writes go straight
through; when the EHR cannot take them the error says so (`UpstreamUnavailable`) and the
gateway's outbox keeps them. A transaction runs as one FHIR transaction where the EHR offers it,
else entry by entry with compensating undo (documented in the README).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import httpx
import orjson
from cachetools import LRUCache

from adapters.base import (
    Adapter,
    BundleEntryRequest,
    Capabilities,
    HistoryEntry,
    HistoryPage,
    SearchPage,
    WriteResult,
    add_notice,
    holds_what_was_sent,
)
from adapters.errors import (
    FhirError,
    Gone,
    NotFound,
    NotSupported,
    PartialResult,
    UpstreamError,
    UpstreamUnavailable,
    WrongFhirVersion,
)
from adapters.fhir_rest.cache import Entry, ResponseCache, make_cache
from adapters.fhir_rest.cache import now as cache_clock
from adapters.fhir_rest.client import UpstreamClient, UpstreamResponse, raise_for_status
from adapters.fhir_rest.matrix import Matrix, build_matrix
from adapters.fhir_rest.paging import LinkSealer
from adapters.fhir_rest.query import query_params, query_string
from adapters.fhir_rest.settings import RestSettings
from adapters.fhir_rest.vendors import profile
from adapters.search import SearchQuery, valid_id
from mappings.frozen import freeze
from mappings.r4 import RESOURCE_TYPES
from mappings.references import (
    patient_targets,
    patient_targets_in_json,
    reference_target,
    rewrite_references,
)

log = logging.getLogger("adapters.fhir_rest")
SHARED_PAGES = 64  # parsed cached search pages kept per EHR (a 24 KB page is about 200 KB)
SHARED_READS = 1024  # parsed cached resources kept per EHR (a 1 KB Patient is about 10 KB)
RETRY_UNKNOWN = 5.0  # seconds before asking an unreachable EHR for its statement again
PAGE_LEFT_EHR = ("The EHR's link to the next page points outside the EHR; the gateway does "
                 "not follow it, so the results stop here")


ANY_TYPE = "*"  # what an `_include` without a target type covers, in search cache keys


@dataclass(frozen=True)
class _Validity:
    """How long a search page stays what the search gives (`SearchPage.validity`)."""

    fresh_until: float  # when the cached copy's TTL ends, on the cache's clock
    types: tuple[str, ...]  # the types the search covers (matches and includes), sorted
    generations: str  # their write generations then, as in the cache key


def _pack_page(page: SearchPage) -> bytes:
    """A checked, localised page for the cache, with the Patients each resource names (so a
    hit skips that walk too)."""
    known = page.patients if page.patients is not None else \
        [patient_targets(r) for r in (*page.resources, *page.included)]
    patients = [sorted(p) for p in known]
    return orjson.dumps({"m": page.resources, "i": page.included, "t": page.total,
                         "n": page.next_cursor, "w": page.warnings, "p": patients})


def _unpack_page(raw: bytes) -> SearchPage:
    data = orjson.loads(raw)
    patients = data.get("p")
    return SearchPage(resources=data["m"], included=data["i"], total=data["t"],
                      next_cursor=data["n"], warnings=data["w"],
                      patients=[frozenset(p) for p in patients] if patients is not None
                      else None)


def _emulated_order(item: BundleEntryRequest) -> int:
    """FHIR's order (DELETE, POST, PUT, GET), with the conditional PUTs (If-Match) last among
    the writes: the resource they guard changes only once everything else is written, so a
    reader who sees its new version also sees the rest; when one loses a race the others are
    undone."""
    if item.method == "PUT" and item.if_match is not None:
        return 3
    return {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 4}[item.method]


class FhirRestAdapter(Adapter):
    def __init__(self, settings: RestSettings, transport: httpx.BaseTransport | None = None,
                 cache: ResponseCache | None = None, sleep=time.sleep) -> None:
        self.s = settings
        self.vendor = profile(settings.vendor)
        self.client = UpstreamClient(settings, transport, sleep)
        self.cache = cache or make_cache(settings.redis_url, settings.cache_namespace(),
                                         settings.stale_for)
        self.sealer = LinkSealer(settings.cursor_key or os.urandom(32), settings.base_url)
        self._base_bytes = self.client.base.encode()
        self._matrix: Matrix | None = None
        self._matrix_at = 0.0
        self._matrix_lock = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(64)]
        # cached pages and resources parsed once, frozen, shared by requests that only
        # show them
        self._shared: LRUCache = LRUCache(maxsize=SHARED_PAGES)
        self._shared_reads: LRUCache = LRUCache(maxsize=SHARED_READS)
        self._shared_lock = threading.Lock()

    # -- capabilities --------------------------------------------------------------------

    def statement(self) -> dict | None:
        """The EHR's CapabilityStatement (cached), or None when it serves none."""
        entry = self.cache.get("metadata")
        if entry is not None and entry.age() < self.s.capability_ttl:
            return orjson.loads(entry.raw)
        try:
            resp = self.client.send("GET", "metadata")
        except (UpstreamUnavailable, UpstreamError):
            if entry is not None:
                return orjson.loads(entry.raw)
            raise
        body = resp.body
        if resp.status != 200 or not body or body.get("resourceType") != "CapabilityStatement":
            return None
        version = str(body.get("fhirVersion") or "")
        if version and not version.startswith("4.0"):
            raise WrongFhirVersion(f"The EHR ({self.s.name}) declares FHIR {version}; this gateway "
                                "speaks R4 (4.0)")
        self.cache.put("metadata", orjson.dumps(body), None)
        return body

    def matrix(self, refresh: bool = False) -> Matrix:
        with self._matrix_lock:
            fresh = time.monotonic() - self._matrix_at < self.s.capability_ttl
            if self._matrix is not None and fresh and not refresh:
                return self._matrix
            known = True
            try:
                statement = self.statement()
            except WrongFhirVersion as exc:  # not R4: offer nothing rather than guess
                log.warning("the EHR's CapabilityStatement is unusable: %s", exc.diagnostics)
                statement = {"rest": [{"mode": "server", "resource": []}]}
            except (UpstreamUnavailable, UpstreamError):  # cannot ask now: ask again soon
                statement, known = None, False
            matrix = build_matrix(self.s.name, self.vendor, statement, self.s.granted_scopes,
                                  self.s.allow, self.s.deny)
            if known or self._matrix is None:
                self._matrix = matrix
            now = time.monotonic()
            # An EHR that could not be asked is asked again after RETRY_UNKNOWN seconds, not
            # on every call (several per request).
            self._matrix_at = now if known else now - self.s.capability_ttl + RETRY_UNKNOWN
            return self._matrix

    def capabilities(self) -> Capabilities:
        return self.matrix().capabilities()

    def health(self) -> dict:
        try:
            resp = self.client.send("GET", "metadata", params=[("_summary", "true")])
            status = "ok" if resp.status < 500 else "down"
        except FhirError as exc:
            return {"status": "down", "ehr": self.s.name, "error": type(exc).__name__,
                    "circuit": self.client.breaker.state}
        return {"status": status, "ehr": self.s.name, "circuit": self.client.breaker.state}

    def close(self) -> None:
        self.client.close()

    # -- reading what the EHR sent -----------------------------------------------------------

    def _local(self, ref: str) -> str | None:
        """An absolute reference into the EHR, made relative; others stay as they are."""
        if ref.startswith(self.client.base):
            target = reference_target(ref)
            if target:
                tail = ref[len(self.client.base):]
                return tail if "/_history/" in tail else f"{target[0]}/{target[1]}"
        return None

    def _resource(self, body: dict | None, raw: bytes | None = None,
                  rtype: str | None = None) -> dict:
        """Check that the EHR sent an R4 resource (of the expected type) and localise it."""
        return self._checked(body, raw, rtype)[0]

    def _checked(self, body: dict | None, raw: bytes | None,
                 rtype: str | None) -> tuple[dict, bytes | None]:
        """`_resource`, and the resource's compact JSON as the EHR sent it when that had to be
        written to look for the EHR's base (it names the same patients)."""
        if not isinstance(body, dict):
            raise UpstreamError(f"The EHR ({self.s.name}) sent no resource")
        kind = body.get("resourceType")
        if kind not in RESOURCE_TYPES:
            raise UpstreamError(f"The EHR ({self.s.name}) sent a {kind!r}, which is not an R4 "
                                "resource type")
        if rtype is not None and kind != rtype:
            raise UpstreamError(f"The EHR ({self.s.name}) sent a {kind} where a {rtype} was "
                                "expected")
        rid = body.get("id")
        if not isinstance(rid, str) or not valid_id(rid):
            raise UpstreamError(f"The EHR ({self.s.name}) sent a {kind} without a valid id")
        # `raw` (what the EHR sent) may be a whole Bundle, whose fullUrls all hold the EHR's
        # base, or spell slashes as `\/`: then this resource's own JSON decides.
        blob = None
        if raw is None or self._base_bytes in raw or b"\\/" in raw:
            blob = orjson.dumps(body)
            if self._base_bytes in blob:
                body = rewrite_references(body, self._local)
        return body, blob

    def _cached_read(self, key: str, raw: bytes, rtype: str) -> dict:
        return self._resource(orjson.loads(raw), raw, rtype)

    def _once(self, shared: LRUCache, key: str, entry: Entry, build):
        """`build()` made once per stored entry of `key` (an entry stored again is another
        one) and shared, from `shared`, by every request that only shows it."""
        stamp = (key, entry.stored_at, len(entry.raw))
        with self._shared_lock:
            made = shared.get(stamp)
        if made is None:
            made = build()
            with self._shared_lock:
                shared[stamp] = made
        return made

    def _shared_read(self, key: str, entry: Entry, rtype: str) -> dict:
        """The cached resource of `entry`, checked and frozen once; it keeps its JSON, so it
        is written once too."""
        return self._once(self._shared_reads, key, entry,
                          lambda: freeze(self._cached_read(key, entry.raw, rtype)))

    # -- reads ---------------------------------------------------------------------------------

    def read(self, resource_type: str, id: str) -> dict:
        return self._read(resource_type, id, shown=False)

    def read_to_show(self, resource_type: str, id: str) -> dict:
        """A fresh cached copy parsed once per stored entry and shared, read-only."""
        return self._read(resource_type, id, shown=True)

    def _read(self, resource_type: str, id: str, shown: bool) -> dict:
        key = f"r:{resource_type}/{id}"
        ttl = self.s.ttl(resource_type)
        entry = self.cache.get(key) if ttl > 0 else None
        if entry is not None and entry.age() < ttl:
            if shown:
                return self._shared_read(key, entry, resource_type)
            return self._cached_read(key, entry.raw, resource_type)
        headers = {"If-None-Match": entry.etag} if entry is not None and entry.etag else None
        # before asking: what the EHR answers is stored only if no write came in between
        generation = self.cache.generation(resource_type) if ttl > 0 else None
        try:
            resp = self.client.send("GET", f"{resource_type}/{id}", headers=headers)
        except UpstreamUnavailable as exc:
            if entry is not None and entry.age() < self.s.stale_for:
                add_notice("stale", f"The EHR is unavailable ({exc.diagnostics}); this is a "
                           "copy kept by the gateway and may be out of date", entry.age())
                return self._cached_read(key, entry.raw, resource_type)
            raise
        if resp.status == 304 and entry is not None:
            self.cache.put_unless_written(key, entry.raw, entry.etag, resource_type, generation)
            return self._cached_read(key, entry.raw, resource_type)
        if resp.status == 404:
            self.cache.drop(key)
            raise NotFound(f"{resource_type}/{id} is not known", expression=resource_type)
        if resp.status == 410:
            self.cache.drop(key)
            raise Gone(f"{resource_type}/{id} was deleted", expression=resource_type)
        raise_for_status(resp, f"the read of {resource_type}/{id}")
        resource = self._resource(resp.body, resp.raw, resource_type)
        if resource["id"] != id:
            raise UpstreamError(f"The EHR sent {resource_type}/{resource['id']} for a read "
                                f"of {resource_type}/{id}")
        if ttl > 0:
            raw = resp.raw if resource is resp.body else orjson.dumps(resource)
            self.cache.put_unless_written(key, raw, resp.headers.get("ETag"), resource_type,
                                          generation)
        return resource

    def vread(self, resource_type: str, id: str, version_id: str) -> dict:
        resp = self.client.send("GET", f"{resource_type}/{id}/_history/{version_id}")
        raise_for_status(resp, f"the read of {resource_type}/{id} version {version_id}")
        return self._resource(resp.body, resp.raw, resource_type)

    def history(self, resource_type: str, id: str, count: int,
                cursor: str | None = None) -> HistoryPage:
        if cursor:
            resp = self.client.send("GET", self.sealer.open(cursor))
        else:
            resp = self.client.send("GET", f"{resource_type}/{id}/_history",
                                    params=[("_count", str(count))])
        raise_for_status(resp, f"the history of {resource_type}/{id}")
        bundle = self._bundle(resp, "history")
        entries = []
        for item in self._items(bundle, "entry"):
            request = item.get("request") or {}
            response = item.get("response") or {}
            resource = item.get("resource")
            if resource is not None:
                resource = self._resource(resource, None, resource_type)
                meta = resource.get("meta") or {}
                version, updated = meta.get("versionId"), meta.get("lastUpdated")
            else:
                version = (response.get("etag") or "").removeprefix("W/").strip('"')
                updated = response.get("lastModified")
            entries.append(HistoryEntry(resource_type, id, str(version or ""),
                                        str(updated or ""), resource,
                                        str(request.get("method") or "PUT")))
        nxt, _ = self._next(bundle)
        return HistoryPage(entries, int(bundle.get("total") or len(entries)), nxt)

    def _bundle(self, resp: UpstreamResponse, kind: str) -> dict:
        body = resp.body
        if not body or body.get("resourceType") != "Bundle":
            raise UpstreamError(f"The EHR ({self.s.name}) answered a {kind} without a Bundle")
        return body

    def _items(self, bundle: dict, name: str) -> list[dict]:
        """Bundle.entry or Bundle.link, refusing a malformed one (not a list of objects)."""
        items = bundle.get(name) or []
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise UpstreamError(f"The EHR ({self.s.name}) sent a malformed Bundle.{name}")
        return items

    def _next(self, bundle: dict) -> tuple[str | None, list[str]]:
        for link in self._items(bundle, "link"):
            if link.get("relation") == "next":
                relative = self.sealer.relative(link.get("url"))
                if relative is None:
                    return None, [PAGE_LEFT_EHR]
                return self.sealer.seal(relative), []
        return None, []

    def search(self, resource_type: str, query: SearchQuery) -> SearchPage:
        return self._search(resource_type, query, shown=False)

    def search_to_show(self, resource_type: str, query: SearchQuery) -> SearchPage:
        """A cached page's resources parsed once and shared, read-only, by every request that
        only shows them (see `Adapter.search_to_show`); the page itself is the caller's."""
        return self._search(resource_type, query, shown=True)

    def _search(self, resource_type: str, query: SearchQuery, shown: bool) -> SearchPage:
        tc = self.capabilities().for_type(resource_type)
        type_params = tc.search_params if tc else {}
        if query.cursor:
            path, params = self.sealer.open(query.cursor), None
            what = path
        else:
            path, params = resource_type, query_params(resource_type, query, type_params)
            what = repr(params)
        ttl = self.s.ttl(resource_type)
        types = {resource_type, *(i.target_type or ANY_TYPE for i in query.include),
                 *(i.source_type for i in query.revinclude)}
        covered = tuple(sorted(types))
        gens = self._generations(covered)
        key = "s:" + hashlib.sha256(f"{path}|{what}|{gens}".encode()).hexdigest()
        entry = self.cache.get(key) if ttl > 0 and gens is not None else None
        if entry is not None and entry.age() < ttl:
            page = self._cached_page(key, entry, shown)
            page.validity = _Validity(entry.stored_at + ttl, covered, gens)
            return page
        try:
            resp = self.client.send("GET", path, params=params)
        except UpstreamUnavailable as exc:
            if entry is not None and entry.age() < self.s.stale_for:
                add_notice("stale", f"The EHR is unavailable ({exc.diagnostics}); these results "
                           "are a copy kept by the gateway and may be out of date", entry.age())
                return self._cached_page(key, entry, shown)
            raise
        raise_for_status(resp, f"the search of {resource_type}")
        page = self._page(self._bundle(resp, "search"), resp.raw, resource_type)
        if ttl > 0 and gens is not None:  # kept checked and localised: a hit is one parse
            stored = self.cache.put(key, _pack_page(page), None)
            if stored is not None:
                page.validity = _Validity(stored.stored_at + ttl, covered, gens)
        return page

    def _generations(self, types: tuple[str, ...]) -> str | None:
        """The types' write generations as search keys carry them; None when the cache
        cannot tell (a shared cache that is down): then no search is cached or kept."""
        gens = []
        for rtype in types:
            generation = self.cache.generation(rtype)
            if generation is None:
                return None
            gens.append(f"{rtype}{generation}")
        return ",".join(gens)

    def still_valid(self, validity: object) -> bool:
        """The page is still what the search gives: its cached copy is fresh (not past the
        type's TTL) and no write through the gateway changed a type the search covers."""
        if not isinstance(validity, _Validity) or cache_clock() >= validity.fresh_until:
            return False
        return self._generations(validity.types) == validity.generations

    def _cached_page(self, key: str, entry: Entry, shown: bool) -> SearchPage:
        """The cached page `entry`: private copies, or (`shown`) resources parsed once per
        stored entry (an entry stored again is another one) and frozen, in new lists."""
        if not shown:
            return _unpack_page(entry.raw)

        def frozen_page() -> SearchPage:
            page = _unpack_page(entry.raw)
            return SearchPage(
                resources=freeze(page.resources), included=freeze(page.included),
                total=page.total, next_cursor=page.next_cursor, prev_cursor=page.prev_cursor,
                warnings=page.warnings, patients=page.patients)

        template = self._once(self._shared, key, entry, frozen_page)
        return SearchPage(resources=list(template.resources),
                          included=list(template.included), total=template.total,
                          next_cursor=template.next_cursor, prev_cursor=template.prev_cursor,
                          warnings=list(template.warnings),
                          patients=None if template.patients is None else list(template.patients))

    def _page(self, bundle: dict, raw: bytes, rtype: str) -> SearchPage:
        """The checked, localised page, with the Patients each resource names (read from the
        JSON the base check wrote, so the access checks need not look again)."""
        page = SearchPage(resources=[], total=bundle.get("total"))
        matched: list[frozenset[str]] = []
        included: list[frozenset[str]] = []
        for item in self._items(bundle, "entry"):
            mode = (item.get("search") or {}).get("mode", "match")
            resource = item.get("resource")
            if mode == "outcome":
                continue
            resource, blob = self._checked(resource, raw, None)
            patients = patient_targets(resource) if blob is None else \
                patient_targets_in_json(blob)
            if mode != "include" and resource["resourceType"] == rtype:
                page.resources.append(resource)
                matched.append(patients)
            else:
                page.included.append(resource)
                included.append(patients)
        page.patients = matched + included
        if not isinstance(page.total, int):
            page.total = None
        page.next_cursor, page.warnings = self._next(bundle)
        return page

    # -- writes --------------------------------------------------------------------------------

    def _written(self, resp: UpstreamResponse, rtype: str, what: str) -> WriteResult:
        raise_for_status(resp, what)
        body = resp.body
        if not body or body.get("resourceType") != rtype:
            location = resp.headers.get("Location") or resp.headers.get("Content-Location")
            target = reference_target(urlsplit(location).path) if location else None
            if target is None:
                raise UpstreamError(f"The EHR accepted {what} but said neither what it stored "
                                    "nor where")
            body = self._fresh_read(rtype, target[1])
        resource = self._resource(body, resp.raw, rtype)
        self._invalidate(rtype, resource["id"])
        meta = resource.get("meta") or {}
        return WriteResult(resource, created=resp.status == 201,
                           version_id=meta.get("versionId"), last_updated=meta.get("lastUpdated"))

    def _fresh_read(self, rtype: str, id: str) -> dict:
        self.cache.drop(f"r:{rtype}/{id}")
        resp = self.client.send("GET", f"{rtype}/{id}")
        raise_for_status(resp, f"the read of {rtype}/{id}")
        return resp.body or {}

    def _invalidate(self, rtype: str, id: str | None) -> None:
        """After a write: every search that covers the type goes, including those that
        `_include` a reference of any type (`Observation:subject`), and so does the cached
        read. The bump comes first: a read sent before it can no longer be stored (see
        `ResponseCache.put_unless_written`), and one stored before it is dropped here."""
        self.cache.bump(rtype)
        self.cache.bump(ANY_TYPE)
        if id:
            self.cache.drop(f"r:{rtype}/{id}")

    def create(self, resource: dict, if_none_exist: SearchQuery | None = None) -> WriteResult:
        rtype = resource["resourceType"]
        headers = {"Prefer": "return=representation"}
        if if_none_exist is not None:
            tc = self.capabilities().for_type(rtype)
            headers["If-None-Exist"] = query_string(rtype, if_none_exist,
                                                    tc.search_params if tc else {})
        try:
            resp = self.client.send("POST", rtype, body=resource, headers=headers,
                                    idempotent=if_none_exist is not None)
        finally:  # the EHR may have stored it even when no answer came back
            self._invalidate(rtype, None)
        return self._written(resp, rtype, f"the create of a {rtype}")

    def update(self, resource: dict, if_match: str | None = None) -> WriteResult:
        rtype, rid = resource["resourceType"], resource["id"]
        headers = {"Prefer": "return=representation"}
        if if_match is not None:
            headers["If-Match"] = f'W/"{if_match}"'
        try:
            resp = self.client.send("PUT", f"{rtype}/{rid}", body=resource, headers=headers)
        finally:
            self._invalidate(rtype, rid)
        return self._written(resp, rtype, f"the update of {rtype}/{rid}")

    def delete(self, resource_type: str, id: str) -> WriteResult:
        try:
            resp = self.client.send("DELETE", f"{resource_type}/{id}")
        finally:
            self._invalidate(resource_type, id)
        if resp.status == 404:
            raise NotFound(f"{resource_type}/{id} is not known", expression=resource_type)
        raise_for_status(resp, f"the delete of {resource_type}/{id}")
        etag = (resp.headers.get("ETag") or "").removeprefix("W/").strip('"') or None
        return WriteResult(None, created=False, version_id=etag)

    # -- transactions ---------------------------------------------------------------------------

    def transaction(self, entries: list[BundleEntryRequest]) -> list:
        conditional = any(e.if_match is not None for e in entries)
        if "transaction" in self.capabilities().system_interactions and (
                self.vendor.transaction_if_match or not conditional):
            return self._upstream_transaction(entries)
        # Run entry by entry. Conditional ones are serialised in this process per resource
        # (striped locks), so two requests through this gateway cannot interleave between one's
        # If-Match and its other writes; several gateway processes in front of such an EHR do
        # not share these locks (see README).
        stripes = sorted({hash(f"{e.resource_type}/{e.id}") % len(self._stripes)
                          for e in entries if e.if_match is not None})
        for i in stripes:
            self._stripes[i].acquire()
        try:
            return self._emulated_transaction(entries)
        finally:
            for i in reversed(stripes):
                self._stripes[i].release()

    def _entry(self, item: BundleEntryRequest) -> dict:
        tc = self.capabilities().for_type(item.resource_type)
        params = tc.search_params if tc else {}
        request: dict = {"method": item.method}
        if item.method == "POST":
            request["url"] = item.resource_type
            if item.if_none_exist is not None:
                request["ifNoneExist"] = query_string(item.resource_type, item.if_none_exist,
                                                      params)
        elif item.method == "GET" and not item.id:
            request["url"] = f"{item.resource_type}?" + urlencode(
                query_params(item.resource_type, item.query or SearchQuery(), params))
        else:
            request["url"] = f"{item.resource_type}/{item.id}"
        if item.if_match is not None:
            request["ifMatch"] = f'W/"{item.if_match}"'
        out: dict = {"request": request}
        if item.full_url:
            out["fullUrl"] = item.full_url
        if item.resource is not None:
            out["resource"] = item.resource
        return out

    def _upstream_transaction(self, entries: list[BundleEntryRequest]) -> list:
        bundle = {"resourceType": "Bundle", "type": "transaction",
                  "entry": [self._entry(e) for e in entries]}
        try:
            resp = self.client.send("POST", "", body=bundle,
                                    headers={"Prefer": "return=representation"})
        finally:
            for e in entries:
                if e.method != "GET":
                    self._invalidate(e.resource_type, e.id)
        raise_for_status(resp, "the transaction")
        answer = self._bundle(resp, "transaction")
        replies = self._items(answer, "entry")
        if len(replies) != len(entries):
            raise UpstreamError(f"The EHR answered a transaction of {len(entries)} entries "
                                f"with {len(replies)}")
        results: list = []
        for item, reply in zip(entries, replies, strict=True):
            status = str((reply.get("response") or {}).get("status") or "")
            resource = reply.get("resource")
            if item.method == "GET" and not item.id:
                results.append(self._page(resource or {}, resp.raw, item.resource_type))
            elif item.method == "GET":
                results.append(self._resource(resource, resp.raw, item.resource_type))
            elif item.method == "DELETE":
                results.append(WriteResult(None, created=False))
            else:
                if resource is None:
                    location = (reply.get("response") or {}).get("location") or ""
                    target = reference_target(urlsplit(location).path)
                    rid = target[1] if target else (item.id if item.method == "PUT" else None)
                    if rid is None:
                        raise UpstreamError("The EHR's transaction answer names no resource")
                    resource = self._fresh_read(item.resource_type, rid)
                resource = self._resource(resource, resp.raw, item.resource_type)
                meta = resource.get("meta") or {}
                self._invalidate(item.resource_type, resource["id"])
                results.append(WriteResult(resource, created=status.startswith("201"),
                                           version_id=meta.get("versionId"),
                                           last_updated=meta.get("lastUpdated")))
        return results

    def _emulated_transaction(self, entries: list[BundleEntryRequest]) -> list:
        """The EHR has no transaction: run the entries one by one (FHIR's order), and if one
        fails, undo the ones before it (delete what was created, put back what was updated).
        Not atomic for other readers in between; the README says so."""
        ids: dict[str, str] = {}
        done: list[tuple[str, BundleEntryRequest, dict | None, WriteResult]] = []
        results: list = [None] * len(entries)
        try:
            for pos in sorted(range(len(entries)), key=lambda i: _emulated_order(entries[i])):
                item = entries[pos]
                body = rewrite_references(item.resource, ids.get) if item.resource else None
                if item.method == "DELETE":
                    before = self._maybe_read(item.resource_type, item.id)
                    results[pos] = self.delete(item.resource_type, item.id or "")
                    done.append(("DELETE", item, before, results[pos]))
                elif item.method == "POST":
                    result = self._create_entry(item, body, done)
                    results[pos] = result
                    if item.full_url and result.resource:
                        ids[item.full_url] = f"{item.resource_type}/{result.resource['id']}"
                    # a match of its own fresh write id is its own earlier try: undone too
                    if result.created or item.write_id:
                        done.append(("POST", item, None, result))
                elif item.method == "PUT":
                    before = self._maybe_read(item.resource_type, item.id)
                    try:
                        results[pos] = self.update(body, item.if_match)
                    except UpstreamUnavailable:
                        # no answer: did it land? (a Slot booked, its appointment undone)
                        results[pos] = self._landed(body)
                        if results[pos] is None:
                            raise
                    done.append(("PUT", item, before, results[pos]))
                elif item.id:
                    results[pos] = self.read(item.resource_type, item.id)
                else:
                    results[pos] = self.search(item.resource_type, item.query or SearchQuery())
        except FhirError:
            self._undo(done)
            raise
        return results

    def _create_entry(self, item: BundleEntryRequest, body: dict, done: list) -> WriteResult:
        """A transaction's create, entry by entry. Tagged with a write id, its condition is
        that id (so it is retried safely); when no answer comes at all, the copy it may have
        left is looked up by that id to be undone with the rest, and when the EHR cannot say,
        the failure says the EHR may hold part of the transaction."""
        try:
            return self.create(body, item.if_none_exist)
        except UpstreamUnavailable as exc:
            mine = item.if_none_exist if item.write_id else None
            if mine is None:
                raise
            try:
                left = self.search(item.resource_type, mine).resources
            except FhirError:
                raise PartialResult(f"{exc.diagnostics}; a create's outcome is unknown") \
                    from None
            for copy in left:
                done.append(("POST", item, None, WriteResult(copy, created=True)))
            raise

    def _landed(self, sent: dict) -> WriteResult | None:
        """The update `sent` as the EHR stored it, when it holds just that; else None (it
        did not land, or the EHR cannot say now)."""
        try:
            stored = self._fresh_read(sent["resourceType"], sent["id"])
        except FhirError:
            return None
        if not holds_what_was_sent(stored, sent):
            return None
        return WriteResult(stored, created=False,
                           version_id=(stored.get("meta") or {}).get("versionId"))

    def _maybe_read(self, rtype: str, id: str | None) -> dict | None:
        try:
            return self._fresh_read(rtype, id or "")
        except (NotFound, Gone):
            return None

    def _undo(self, done: list) -> None:
        failures = []
        for method, item, before, result in reversed(done):
            try:
                if method == "POST" or (method == "PUT" and before is None):
                    self.delete(item.resource_type, result.resource["id"])
                elif before is not None:  # PUT or DELETE: put the earlier content back
                    restored = {k: v for k, v in before.items() if k != "meta"}
                    self.update(restored, result.version_id if method == "PUT" else None)
            except FhirError as exc:
                failures.append(f"{item.resource_type}: {exc.diagnostics}")
        if failures:
            raise PartialResult("A step failed and undoing the earlier steps failed too: "
                                + "; ".join(failures))

    def operation(self, name, resource_type, id, parameters) -> dict:
        raise NotSupported(f"${name} is not forwarded to the EHR", expression=name)
