"""Whole search answers kept for the callers who ask the very same search under the very same
access decision, for as long as the adapter says its page is unchanged.

A portal asks the same searches again and again (a patient's results, their appointments).
When the adapter marks a page as keepable (`SearchPage.validity`: the REST adapter's cached
copy, while it is fresh and no write through the gateway touched a type the search covers),
the service keeps the Bundle it built, read-only, with the bodies it was rendered to. The next
identical request still has its token verified and its access decided; what is skipped is the
work that is a function of (request, decision, page) alone: parsing the search, asking the
adapter, checking each resource against the decision, building the Bundle, writing its JSON.

The key is everything that work reads: the type, every parameter as sent (`_cursor`, `_count`,
`_summary`, `_elements`, `_format` and `_pretty` too), `Prefer: handling=strict`, the FHIR base
the links are written with, and the access decision itself (confinement, scope queries,
narrowing, exactness). Two callers share an answer only when the policy decided the same for
both, which is exactly when every check lets the same resources through. An answer also ends
when the EHR's capabilities are refreshed (they decide how a search is parsed).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from cachetools import LRUCache

from adapters.base import Adapter, Capabilities
from fhir_gateway.access import AccessDecision
from fhir_gateway.request import FhirRequest, FhirResponse
from mappings.frozen import freeze

KEPT_BYTES = 48 * 2**20  # per process, as estimated below
# A parsed Bundle holds about ten times its compact JSON in Python objects (tracemalloc: 123 KB
# for a 12 KB page of 20 Observations); its bodies add about the JSON once per spelling.
HELD_PER_JSON_BYTE = 12
MOST_ENTRIES = 100  # a page with more is over the size kept at any budget worth having


@dataclass(frozen=True)
class _Kept:
    response: FhirResponse  # its Bundle frozen; `rendered` filled as it is written
    validity: object  # the page's `SearchPage.validity`
    caps: Capabilities  # the capabilities it was parsed with
    size: int  # bytes it is estimated to hold


def answer_key(req: FhirRequest, base: str, decision: AccessDecision | None) -> tuple:
    """What a search-type answer depends on besides the EHR's data (see the module)."""
    access = None if decision is None else decision.identity()
    # Included resources are judged by the token's scopes for their own types: callers with
    # other scopes never share an answer that includes anything.
    scopes = req.principal.scopes if req.principal is not None and any(
        name.startswith(("_include", "_revinclude")) for name, _ in req.params) else None
    return (req.resource_type, tuple(req.params), req.strict, base, access, scopes)


class SearchAnswers:
    """An LRU of kept answers; thread-safe (gthread workers share the service)."""

    def __init__(self, budget: int = KEPT_BYTES) -> None:
        self._kept: LRUCache = LRUCache(maxsize=budget, getsizeof=lambda kept: kept.size)
        self._largest = budget // 32  # a larger answer (a 1,000-entry page) is not kept
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        """Bytes the kept answers are estimated to hold (at most the budget)."""
        with self._lock:
            return self._kept.currsize

    def get(self, key: tuple, adapter: Adapter, caps: Capabilities) -> FhirResponse | None:
        """The kept answer (the caller's own copy of the response, sharing its read-only
        Bundle and bodies) while the adapter says its page still holds; else None."""
        with self._lock:
            kept = self._kept.get(key)
        if kept is None:
            return None
        if kept.caps is not caps or not adapter.still_valid(kept.validity):
            with self._lock:
                if self._kept.get(key) is kept:
                    del self._kept[key]
            return None
        return replace(kept.response, headers=dict(kept.response.headers))

    def keep(self, key: tuple, response: FhirResponse, validity: object,
             caps: Capabilities) -> FhirResponse:
        """Keep a just-built answer; returns the response to send (rendered bodies are kept
        with it). Its Bundle is frozen: any later attempt to change it fails loudly."""
        if len(response.resource.get("entry") or ()) > MOST_ENTRIES:
            return response  # too large to keep anyway: not frozen and written for nothing
        bundle = freeze(response.resource)
        body = bundle.compact()  # its compact JSON, as it is sent unless asked otherwise
        size = HELD_PER_JSON_BYTE * len(body) + sum(len(repr(part)) for part in key)
        if size > self._largest:
            return response
        frozen = replace(response, resource=bundle, rendered={})
        with self._lock:
            self._kept[key] = _Kept(frozen, validity, caps, size)
        return replace(frozen)
