"""The FHIR interactions, run against the configured adapter; no HTTP in here.

`FhirService.handle` takes a `FhirRequest` and returns a `FhirResponse`. The REST blueprint and
the batch processor both call it, so every path meets the same type, interaction and validation
checks. Access control (SMART) will sit in front of `handle`, in one place.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import lru_cache
from urllib.parse import parse_qsl, urlencode

from adapters.base import Adapter, BundleEntryRequest, Capabilities, TypeCapability, WriteResult
from adapters.errors import (
    Forbidden,
    Gone,
    HeldBack,
    Invalid,
    NotFound,
    NotSupported,
    UpstreamError,
    UpstreamUnavailable,
)
from adapters.search import SearchQuery, valid_id
from fhir_gateway import __version__, bundles
from fhir_gateway.access import AccessDecision, AccessPolicy
from fhir_gateway.access.policy import (
    PERMISSION,
    UNCONFINABLE,
    matches,
    owner,
    patient_refs,
    sole_owner,
)
from fhir_gateway.config import Config
from fhir_gateway.errors import MethodNotAllowed, issue, operation_outcome
from fhir_gateway.operations.builtin import builtin_operations
from fhir_gateway.operations.registry import OperationContext, Registry, parameters_from
from fhir_gateway.outbox import WRITE_ID_SYSTEM, Outbox, assign_write_id
from fhir_gateway.paging import CursorSigner, search_digest
from fhir_gateway.payments import OfflinePaymentProvider, PaymentProvider
from fhir_gateway.request import FhirRequest, FhirResponse
from fhir_gateway.search_answers import SearchAnswers, answer_key
from fhir_gateway.search_request import parse_count, parse_search
from fhir_gateway.validation import validate_resource
from mappings.r4 import RESOURCE_TYPES
from mappings.references import iter_references, reference_target


class FhirService:
    def __init__(self, adapter: Adapter, config: Config, signer: CursorSigner) -> None:
        self.adapter = adapter
        self.policy = AccessPolicy(self._search_params)
        self.security: dict | None = None  # CapabilityStatement.rest.security, set with SMART
        self.payment_provider: PaymentProvider = OfflinePaymentProvider()
        self.outbox: Outbox | None = None  # set when the EHR is remote (fhir_rest)
        self.ledger = None  # fhir_gateway.ledger.Ledger, likewise
        self.smart = None  # smart_launch.server.SmartServer, set with SMART ($apps...)
        self.audit = None  # fhir_gateway.audit.AuditLog, likewise (an app's last use)
        self.operations = Registry()
        for spec in builtin_operations():
            self.operations.add(spec)
        self.config = config
        self.limits = config.limits
        self.signer = signer
        self.started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.answers = SearchAnswers()
        # (type, narrowing) -> (capabilities, clauses): see `_narrowing`
        self._narrowed: dict[tuple, tuple[Capabilities, tuple]] = {}

    @property
    def caps(self) -> Capabilities:
        """What the EHR can do now (the adapter keeps it; a REST EHR's matrix is refreshed
        when its CapabilityStatement's cache runs out)."""
        return self.adapter.capabilities()

    # -- checks ---------------------------------------------------------------------------

    def type_capability(self, rtype: str | None, interaction: str) -> TypeCapability:
        """The type's capability, or 404 for an unknown type and 405 for a refused action."""
        if not rtype or rtype not in RESOURCE_TYPES:
            raise NotFound(f"Unknown resource type {rtype!r}", expression="type",
                           code="not-supported")
        tc = self.caps.for_type(rtype)
        if tc is None:
            raise NotFound(f"This server does not serve {rtype}", expression="type",
                           code="not-supported")
        if not tc.allows(interaction):
            raise MethodNotAllowed(f"{interaction} is not allowed on {rtype} by this EHR",
                                   expression=rtype)
        return tc

    @staticmethod
    def check_id(id: str | None) -> str:
        if not id or not valid_id(id):
            raise Invalid(f"{id!r} is not a valid resource id", expression="id")
        return id

    def search_query(self, rtype: str, params: list[tuple[str, str]], strict: bool):
        return parse_search(rtype, params, self.caps, self.limits, strict)

    def _narrowing(self, rtype: str, narrowing: tuple[tuple[str, str], ...]) -> list:
        """The access narrowing's search clauses (new objects each time), parsed once per
        type and narrowing for as long as the EHR's capabilities stay the same object."""
        caps, key = self.caps, (rtype, narrowing)
        hit = self._narrowed.get(key)
        if hit is None or hit[0] is not caps:
            clauses = self.search_query(rtype, list(narrowing), strict=True).query.clauses
            hit = (caps, tuple(clauses))
            if len(self._narrowed) >= 4096:
                self._narrowed.clear()  # one entry per patient and type: rarely reached
            self._narrowed[key] = hit
        return [replace(c, values=list(c.values)) for c in hit[1]]

    def _search_params(self, rtype: str) -> dict:
        tc = self.caps.for_type(rtype)
        return tc.search_params if tc else {}

    # -- access -----------------------------------------------------------------------------

    def decide(self, req: FhirRequest) -> AccessDecision | None:
        """The access decision for a request from outside, or None for a trusted caller."""
        if req.principal is None:
            return None
        return self.policy.decide(req.principal, req.interaction, req.resource_type)

    @staticmethod
    def hidden(rtype: str, id: str) -> NotFound:
        """What a caller sees for a resource it may not see: the same as for a missing one."""
        return NotFound(f"{rtype}/{id} is not known", expression=rtype)

    def allows(self, decision: AccessDecision, resource: dict) -> bool:
        """The decision lets the caller see this resource: `decision.permits`, or for a
        patient's read of a Binary, `context_permits`."""
        if decision.by_context:
            return self.context_permits(decision, binary=resource)
        return decision.permits(resource)

    def context_permits(self, decision: AccessDecision, binary: dict) -> bool:
        """A patient's read of a Binary: allowed when its `securityContext` is a relative
        `Type/id` the token may read (that type's own scopes and the patient's compartment, on
        the resource as it is now) and the Binary meets the Binary scopes' queries. No context,
        a contained, absolute or logical one, another Binary or Bundle, or a context that is
        missing or deleted: hidden."""
        context = binary.get("securityContext")
        ref = context.get("reference") if isinstance(context, dict) else None
        target = reference_target(ref) if isinstance(ref, str) else None
        if target is None or ref.split("/_history/")[0] != f"{target[0]}/{target[1]}" \
                or target[0] in UNCONFINABLE or decision.caller is None:
            return False
        try:
            judge = self.policy.decide(decision.caller, "read", target[0])
            proxy = self.adapter.read(*target)
        except UpstreamUnavailable:
            raise  # the EHR cannot be asked now: 503, not a verdict
        except (Forbidden, NotFound, Gone, UpstreamError):  # (an EHR refusing the type, too)
            return False
        if not judge.permits(proxy):
            return False
        return not decision.queries or any(matches(binary, q) for q in decision.queries)

    def _visible(self, decision: AccessDecision | None, rtype: str, id: str,
                 shown: bool = False) -> dict | None:
        """The current resource if the caller may see it; NotFound when it may not. A deleted
        resource is Gone only for a caller who could see its last version. `shown`: the
        caller only shows it (it may be a shared, read-only one)."""
        try:
            resource = (self.adapter.read_to_show if shown else self.adapter.read)(rtype, id)
        except NotFound:
            # Some EHRs answer 404, not 410, for a deleted resource: its history tells (and
            # shows a resource created since the read as its newest version).
            try:
                newest = self.adapter.history(rtype, id, 1).entries[:1]
            except NotFound:
                newest = []
            if not newest:
                raise
            if newest[0].resource is None:
                return self._visible_deleted(decision, rtype, id)
            resource = newest[0].resource
        except Gone:
            return self._visible_deleted(decision, rtype, id)
        if decision is not None and not self.allows(decision, resource):
            raise self.hidden(rtype, id)
        return resource

    def _visible_deleted(self, decision: AccessDecision | None, rtype: str, id: str):
        """Gone for a caller who could see the last version; NotFound for anyone else."""
        if decision is not None:
            last = next((e.resource for e in self.adapter.history(rtype, id, 2).entries
                         if e.resource is not None), None)
            if last is None or not self.allows(decision, last):
                raise self.hidden(rtype, id)
        raise Gone(f"{rtype}/{id} was deleted", expression=rtype)

    def visible_for_write(self, decision: AccessDecision, rtype: str, id: str) -> None:
        """Apps change (or, in a transaction, read) only what exists and is theirs; anything
        else looks absent."""
        try:
            self._visible(decision, rtype, id)
        except Gone:
            raise self.hidden(rtype, id) from None

    # -- dispatch -------------------------------------------------------------------------

    def handle(self, req: FhirRequest, base: str) -> FhirResponse:
        handler = getattr(self, "_" + req.interaction.replace("-", "_"), None)
        if handler is None:
            raise MethodNotAllowed(f"Interaction {req.interaction} is not supported")
        return handler(req, base)

    def _read(self, req: FhirRequest, base: str) -> FhirResponse:
        self.type_capability(req.resource_type, "read")
        decision = self.decide(req)
        resource = self._visible(decision, req.resource_type, self.check_id(req.id),
                                 shown=True)
        return self._shown(resource, decision)

    @staticmethod
    def _shown(resource: dict, decision: AccessDecision | None) -> FhirResponse:
        resp = FhirResponse(200, resource, version_headers(resource), shape=True)
        if decision is not None and decision.by_context:  # a Binary names no patient
            resp.owner, resp.owner_known = decision.patient, True
        return resp

    def _vread(self, req: FhirRequest, base: str) -> FhirResponse:
        self.type_capability(req.resource_type, "vread")
        decision = self.decide(req)
        rid = self.check_id(req.id)
        version = req.version_id or ""
        if not valid_id(version):  # a version id has the syntax of an id (FHIR `id` type)
            raise Invalid(f"{version!r} is not a valid version id", expression="vid")
        try:
            resource = self.adapter.vread(req.resource_type, rid, version)
        except (NotFound, Gone):
            if decision is not None:
                self._visible(decision, req.resource_type, rid)
            raise
        if decision is not None and not self.allows(decision, resource):
            raise self.hidden(req.resource_type, rid)
        return self._shown(resource, decision)

    def _history_instance(self, req: FhirRequest, base: str) -> FhirResponse:
        self.type_capability(req.resource_type, "history-instance")
        rid = self.check_id(req.id)
        decision = self.decide(req)
        if decision is not None:
            try:
                self._visible(decision, req.resource_type, rid)
            except Gone:
                pass  # the caller may see the history of its own deleted resource
        count = parse_count(req.param("_count"), self.limits)
        path = f"{req.resource_type}/{rid}/_history"
        kept = [(k, v) for k, v in req.params if k == "_count"]
        digest = search_digest(path, kept)
        token = req.param("_cursor")
        cursor = self.signer.verify(token, digest) if token else None
        page = self.adapter.history(req.resource_type, rid, max(count, 1), cursor)
        if decision is not None:
            page.entries = [e for e in page.entries
                            if e.resource is None or decision.permits(e.resource)]
        nxt = bundles.page_url(base, path, kept, self.signer.sign(page.next_cursor, digest)) \
            if page.next_cursor else None
        return FhirResponse(200, bundles.history(base, page, bundles.page_url(base, path, kept),
                                                 nxt))

    def _search_type(self, req: FhirRequest, base: str) -> FhirResponse:
        rtype = req.resource_type
        self.type_capability(rtype, "search-type")
        decision = self.decide(req)  # the token's scopes, on every request
        key, caps = answer_key(req, base, decision), self.caps
        kept = self.answers.get(key, self.adapter, caps)
        if kept is not None:
            return kept
        parsed = self.search_query(rtype, req.params, req.strict)
        if decision is not None and decision.narrowing:
            # Added on every page, never written into links: the caller's own search stays
            # what it asked. (A cursor is bound to the decision: see `search_digest`.)
            parsed.query.clauses += self._narrowing(rtype, tuple(decision.narrowing))
        digest = search_digest(rtype, parsed.used, None if decision is None else
                               decision.identity())
        token = req.param("_cursor")
        if token:
            parsed.query.cursor = self.signer.verify(token, digest)
        page = self.adapter.search_to_show(rtype, parsed.query)  # only checked and shown
        # each resource's Patients, when the adapter read them: checks and the log reuse them
        known = page.patients
        if known is not None and len(known) != len(page.resources) + len(page.included):
            known = None
        if decision is not None:  # the narrowing should have done it; check every resource
            matched = len(page.resources)
            page.resources, mine = _permitted(decision, page.resources,
                                              None if known is None else known[:matched])
            page.included, theirs = self.permitted_includes(
                req.principal, page.included, None if known is None else known[matched:])
            known = None if known is None else mine + theirs
            if not decision.exact:
                page.total = self._visible_total(rtype, parsed.query, decision, page,
                                                 first_page=not token)
        link = bundles.page_url
        self_url = link(base, rtype, parsed.used)
        nxt = link(base, rtype, parsed.used, self.signer.sign(page.next_cursor, digest)) \
            if page.next_cursor else None
        prev = link(base, rtype, parsed.used, self.signer.sign(page.prev_cursor, digest)) \
            if page.prev_cursor else None
        bundle = bundles.searchset(base, page, self_url, nxt, prev,
                                   parsed.warnings + page.warnings)
        resp = FhirResponse(200, bundle, shape=True)
        if known is not None:
            resp.owner_known = True
            resp.owner = sole_owner(owner(r, refs) for r, refs in
                                    zip([*page.resources, *page.included], known, strict=True))
        if page.validity is not None and not parsed.query.summary_count:
            return self.answers.keep(key, resp, page.validity, caps)  # (a count walks pages)
        return resp

    MAX_COUNTED = 20_000

    def _visible_total(self, rtype: str, query: SearchQuery, decision: AccessDecision,
                       page, first_page: bool) -> int | None:
        """The total the caller may know when the EHR could not be asked exactly: counted
        from what the post-check lets through (up to MAX_COUNTED), or none at all."""
        if query.summary_count:
            counted, seen = 0, 0
            walk = SearchQuery(clauses=query.clauses, count=self.limits.max_count,
                               with_total=False)
            while seen < self.MAX_COUNTED:
                found = self.adapter.search(rtype, walk)
                counted += sum(1 for r in found.resources if decision.permits(r))
                seen += len(found.resources)
                if not found.next_cursor:
                    return counted
                walk.cursor = found.next_cursor
            return None
        if first_page and page.next_cursor is None:
            return len(page.resources)  # the whole result is on this page
        return None

    def _create(self, req: FhirRequest, base: str) -> FhirResponse:
        rtype = req.resource_type
        tc = self.type_capability(rtype, "create")
        body = validate_resource(req.body, rtype)
        body = {k: v for k, v in body.items() if k != "id"}  # the server assigns the id
        decision = self.decide(req)
        self.check_write(decision, body)
        if req.if_none_exist is not None and not tc.conditional_create:
            raise MethodNotAllowed(f"Conditional create is not supported on {rtype}")
        result = self.create_checked(req, base, decision, body,
                                     decision.narrowing if decision else ())
        if isinstance(result, FhirResponse):
            return result
        return self.write_response(result, req, base, 201 if result.created else 200)

    def create_checked(self, req: FhirRequest, base: str, decision: AccessDecision | None,
                       body: dict, narrowing=(),
                       relied_on: Iterable[tuple[str, str]] = ()) -> WriteResult | FhirResponse:
        """Create `body` (validated and checked against `decision` already) under `req`'s
        If-None-Exist, narrowed by `narrowing`: where the EHR can, tagged with a write id
        and sent as a conditional create on it, so a replay never stores it twice. The
        WriteResult; or, when the EHR cannot take it now or earlier writes of its lane still
        wait, the write kept in the outbox and its 202 FhirResponse. Plain creates and the
        portal actions that make one resource use this one path.

        It is never queued behind a write it must not follow, and then is refused (HeldBack,
        503) as a transaction would be: a queued write to a resource in `relied_on` (what
        an action read to decide it may make this one: a replay would follow a change its
        checks never saw), or one in the lane of another patient the body names (its own
        lane is one patient's, or the shared one when it names several)."""
        rtype = body["resourceType"]
        condition = kept = None
        if req.if_none_exist is not None:
            condition = self.condition(rtype, req.if_none_exist, "If-None-Exist", narrowing)
            # the caller's condition as a replay must ask it
            kept = urlencode(parse_qsl(req.if_none_exist.split("?", 1)[-1],
                                       keep_blank_values=True) + list(narrowing))
        lane = None
        if self.outbox is not None:
            lane = self.lane(req, decision, body)
            others = self._patients_of(rtype, None, body) - {lane}
            relied_on = set(relied_on)
            if relied_on or others:
                self._hold(self.outbox.waiting_until(relied_on, others))
        write_id = None
        if self.write_ids(rtype):
            write_id = assign_write_id(body)
            if condition is None:
                condition = self.write_condition(rtype, write_id)
        return self.send_write(req, base, decision, lambda: self.adapter.create(body, condition),
                               body=body, write_id=write_id, if_none_exist=kept, lane=lane)

    def write_ids(self, rtype: str) -> bool:
        """Are creates of this type tagged with a write id? With an outbox (an EHR that can be
        down), where the EHR offers conditional create and searches `identifier`."""
        tc = self.caps.for_type(rtype)
        return self.outbox is not None and tc is not None and tc.conditional_create and \
            "identifier" in tc.search_params

    def write_condition(self, rtype: str, write_id: str) -> SearchQuery:
        return self.search_query(rtype, [("identifier", f"{WRITE_ID_SYSTEM}|{write_id}")],
                                 strict=True).query

    def send_write(self, req: FhirRequest, base: str, decision: AccessDecision | None, send,
                   body: dict | None = None, write_id: str | None = None,
                   if_none_exist: str | None = None, lane: str | None = None):
        """Run `send` (a write to the EHR) and return its WriteResult; or, when the EHR cannot
        take it now, or earlier writes for the same patient still wait in the outbox (they
        must land first), queue it and return the 202 FhirResponse. `lane`: the write's
        lane when the caller has chosen it already."""
        if self.outbox is None:
            return send()
        if lane is None:
            lane = self.lane(req, decision, body)
        if self.outbox.waiting_until(set(), {lane}) is not None:
            return self.queue(UpstreamUnavailable(
                "Earlier changes to this patient's record are still waiting for the EHR"),
                req, base, lane, body, write_id, if_none_exist)
        try:
            return send()
        except UpstreamUnavailable as exc:
            return self.queue(exc, req, base, lane, body, write_id, if_none_exist)

    def transaction(self, entries: list[BundleEntryRequest], patients: tuple[str, ...] = (),
                    relied_on: Iterable[tuple[str, str]] = ()) -> list:
        """The adapter's atomic write, once no earlier write it would overtake, or to what
        its caller's checks read (`relied_on`), still waits."""
        self.clear_to_write(entries, patients, relied_on)
        return self.adapter.transaction(entries)

    def clear_to_write(self, writes: list[BundleEntryRequest], patients: tuple[str, ...] = (),
                       relied_on: Iterable[tuple[str, str]] = ()) -> None:
        """Writes that are never queued (transactions, portal actions that change several
        resources or what exists) must not overtake earlier ones that still wait in the
        outbox for the same resource or patient (the lanes `send_write` keeps), nor a
        waiting change to what the caller's checks read (`relied_on`): 503 until those are
        stored, and nothing is sent."""
        writes = [e for e in writes if e.method in ("POST", "PUT", "DELETE", "PATCH")]
        if self.outbox is None or not writes:  # reads never wait
            return
        resources = {(e.resource_type, e.id) for e in writes if e.id} | set(relied_on)
        # The lanes: the caller's patient, and every patient the change names (a portal
        # action's Slot or receipt belongs to the patient its Appointment or Account names).
        # A change that names no patient at all waits behind the shared lane "", as a plain
        # write of it does.
        lanes = {p for p in patients if p}
        for entry in writes:
            lanes |= self._patients_of(entry.resource_type, entry.id, entry.resource)
        if not lanes:
            lanes.add("")
        self._hold(self.outbox.waiting_until(resources, lanes))

    def _hold(self, due: float | None) -> None:
        """Refuse a write that must not overtake queued ones (`due`: when they are next
        tried; None when none waits)."""
        if due is not None:
            raise HeldBack(
                "Earlier changes to this patient's record are still waiting for the EHR, and "
                "this change must not go before them; it was not sent. Try again once they are "
                "stored", retry_after=max(self.RETRY_BEHIND_OUTBOX, due - time.time()))

    RETRY_BEHIND_OUTBOX = 5.0  # seconds at least: about two rounds of the outbox worker

    @staticmethod
    def _patients_of(rtype: str, rid: str | None, body: dict | None) -> set[str]:
        """The patients a write names, as its outbox lane is chosen: a Patient is its own;
        another resource's are the Patients its body references."""
        if rtype == "Patient":
            return {rid or (body or {}).get("id")} - {None}
        return patient_refs(body) if body is not None else set()

    def lane(self, req: FhirRequest, decision: AccessDecision | None, body: dict | None) -> str:
        """The outbox lane of a write: the lane of a write to the same resource that still
        waits (a clinician's delete must not overtake a patient's queued update), else the
        patient it belongs to, or "" for none."""
        if req.id and self.outbox is not None:
            waiting = self.outbox.waiting_lane(req.resource_type or "", req.id)
            if waiting is not None:
                return waiting
        if decision is not None and decision.patient:
            return decision.patient
        refs = self._patients_of(req.resource_type or "", req.id, body)
        return next(iter(refs)) if len(refs) == 1 else ""

    def queue(self, exc: UpstreamUnavailable, req: FhirRequest, base: str, lane: str,
              body: dict | None, write_id: str | None,
              if_none_exist: str | None = None) -> FhirResponse:
        """The EHR cannot take the write now: keep it in the outbox and answer 202 with where
        to follow it."""
        principal = req.principal
        entry = self.outbox.enqueue(
            method={"create": "POST", "update": "PUT", "delete": "DELETE"}[req.interaction],
            resource_type=req.resource_type or "", resource_id=req.id, body=body,
            if_match=req.if_match, write_id=write_id, lane=lane,
            client_id=getattr(principal, "client_id", "") or "", error=exc.diagnostics,
            retry_after=exc.retry_after, if_none_exist=if_none_exist,
            requester=getattr(principal, "user", None))
        status_url = f"{base}/_outbox/{entry.id}"
        outcome = operation_outcome([issue(
            "information", "informational",
            f"{exc.diagnostics}. The write is kept by the gateway and will be sent when the "
            f"EHR is back; follow {status_url} to see when it is stored.")])
        return FhirResponse(202, outcome, {"Content-Location": status_url,
                                           "Location": status_url})

    def permitted_includes(self, principal, included: list[dict],
                           refs: list[frozenset[str]] | None = None
                           ) -> tuple[list[dict], list[frozenset[str]]]:
        """The `_include`d and `_revinclude`d resources the caller may see, each judged by the
        decision for reading its own type (its scopes and their query constraints, its
        patient), as a read of it would be; with their Patients when known."""
        decisions: dict[str, AccessDecision | None] = {}
        kept: list[dict] = []
        kept_refs: list[frozenset[str]] = []
        for i, resource in enumerate(included):
            rtype = resource.get("resourceType", "")
            if rtype not in decisions:
                try:
                    decisions[rtype] = self.policy.decide(principal, "read", rtype)
                except Forbidden:
                    decisions[rtype] = None  # the token may not read this type at all
            decision = decisions[rtype]
            known = None if refs is None else refs[i]
            if decision is not None and decision.permits(resource, known):
                kept.append(resource)
                if known is not None:
                    kept_refs.append(known)
        return kept, kept_refs

    @staticmethod
    def check_write(decision: AccessDecision | None, body: dict) -> None:
        if decision is not None and decision.patient is not None:
            # A conditional reference (`Patient?identifier=...`) names no Type/id the check
            # can see, and an EHR resolves it to whichever patient matches: not from a
            # patient's app.
            for path, ref in iter_references(body):
                if "?" in ref:
                    raise Forbidden("A patient's app may not write conditional references "
                                    "(a search instead of Type/id)",
                                    expression=f"{body['resourceType']}.{path}")
        if decision is not None and not decision.permits(body):
            raise Forbidden("This token may only write resources of its own patient and "
                            "within its granted scopes", expression=body["resourceType"])

    def condition(self, rtype: str, query_string: str, where: str,
                  narrowing=()) -> SearchQuery:
        text = query_string.split("?", 1)[-1]
        try:
            params = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise Invalid(f"{where} must be a search query like identifier=sys|123",
                          expression=where) from None
        parsed = self.search_query(rtype, params + list(narrowing), strict=True)
        if not parsed.query.clauses:
            raise Invalid(f"{where} has no search criteria", expression=where)
        return parsed.query

    def _update(self, req: FhirRequest, base: str) -> FhirResponse:
        rtype = req.resource_type
        self.type_capability(rtype, "update")
        rid = self.check_id(req.id)
        body = validate_resource(req.body, rtype)
        if "id" not in body:
            raise Invalid("The resource in an update must carry its id", expression=f"{rtype}.id")
        if body["id"] != rid:
            raise Invalid(f"The body's id {body['id']!r} does not match the URL's {rid!r}",
                          expression=f"{rtype}.id")
        decision = self.decide(req)
        if decision is not None:
            self.visible_for_write(decision, rtype, rid)
            self.check_write(decision, body)
        result = self.send_write(req, base, decision,
                                 lambda: self.adapter.update(body, req.if_match), body=body)
        if isinstance(result, FhirResponse):
            return result
        return self.write_response(result, req, base, 201 if result.created else 200)

    def _delete(self, req: FhirRequest, base: str) -> FhirResponse:
        self.type_capability(req.resource_type, "delete")
        decision = self.decide(req)
        rid = self.check_id(req.id)
        if decision is not None:
            self.visible_for_write(decision, req.resource_type, rid)
        result = self.send_write(req, base, decision,
                                 lambda: self.adapter.delete(req.resource_type, rid))
        if isinstance(result, FhirResponse):
            return result
        headers = {"ETag": f'W/"{result.version_id}"'} if result.version_id else {}
        return FhirResponse(204, None, headers)

    def _operation(self, req: FhirRequest, base: str) -> FhirResponse:
        spec = self.operations.get(req.resource_type or "", req.operation or "")
        if req.id is not None and not spec.instance:
            raise Invalid(f"${spec.name} runs on the type, not on an instance",
                          expression=f"{spec.resource_type}.${spec.name}")
        if req.id is None and not spec.type_level:
            raise Invalid(f"${spec.name} runs on one {spec.resource_type}: "
                          f"{spec.resource_type}/[id]/${spec.name}",
                          expression=f"{spec.resource_type}.${spec.name}")
        how, needs, why = spec.path(self.caps)
        if how == "unavailable":
            raise NotSupported(f"${spec.name} cannot run here: the EHR ({self.caps.software}) "
                               f"does not offer {why}", expression=f"{spec.resource_type}."
                               f"${spec.name}")
        if req.principal is not None:
            for rtype, permission in needs:
                interaction = {v: k for k, v in PERMISSION.items()}[permission]
                self.policy.decide(req.principal, interaction, rtype)
        params: dict[str, list] = {}
        for key, value in req.params:
            params.setdefault(key, []).append(value)
        for key, values in parameters_from(req.body).items():
            params.setdefault(key, []).extend(values)
        return spec.handler(OperationContext(req, base, self, params))

    def _capabilities(self, req: FhirRequest, base: str) -> FhirResponse:
        from fhir_gateway.capability import capability_statement

        statement = capability_statement(self.caps, base, __version__, self.started)
        for entry in statement["rest"][0]["resource"]:
            specs = [spec for spec in self.operations.for_type(entry["type"])
                     if spec.path(self.caps)[0] != "unavailable"]
            if specs:
                entry["operation"] = [
                    {"name": s.name, "definition": f"{base}/OperationDefinition/{s.definition_id}"}
                    for s in specs]
        if self.security is not None:
            statement["rest"][0]["security"] = self.security
        return FhirResponse(200, statement)

    def write_response(self, result: WriteResult, req: FhirRequest, base: str,
                       status: int) -> FhirResponse:
        resource = result.resource
        headers = version_headers(resource) if resource else {}
        if resource:
            headers["Location"] = (f"{base}/{resource['resourceType']}/{resource['id']}"
                                   f"/_history/{resource['meta']['versionId']}")
        want = req.prefer.get("return", "representation")
        if want == "minimal":
            return FhirResponse(status, None, headers)
        if want == "operationoutcome":
            verb = "created" if result.created else "updated"
            return FhirResponse(status, operation_outcome(
                [issue("information", "informational", f"Resource {verb}")]), headers)
        return FhirResponse(status, resource, headers)


@lru_cache(maxsize=4096)
def http_date(instant: str) -> str:
    """A FHIR instant as an HTTP date (Last-Modified); remembered, as the same versions are
    served again and again."""
    return format_datetime(datetime.fromisoformat(instant.replace("Z", "+00:00")), usegmt=True)


def version_headers(resource: dict) -> dict[str, str]:
    meta = resource.get("meta") or {}
    headers = {}
    if meta.get("versionId"):
        headers["ETag"] = f'W/"{meta["versionId"]}"'
    if meta.get("lastUpdated"):
        headers["Last-Modified"] = http_date(meta["lastUpdated"])
    return headers


def _permitted(decision: AccessDecision, resources: list[dict],
               refs: list[frozenset[str]] | None) -> tuple[list[dict], list[frozenset[str]]]:
    """The resources the decision lets the caller see, with their Patients when known."""
    if refs is None:
        return [r for r in resources if decision.permits(r)], []
    kept = [(r, known) for r, known in zip(resources, refs, strict=True)
            if decision.permits(r, known)]
    return [r for r, _ in kept], [known for _, known in kept]
