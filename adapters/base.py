"""The one interface every EHR adapter implements.

Resources cross this boundary as plain JSON dicts. An adapter says what its EHR can do in
`capabilities()`; the gateway builds its CapabilityStatement from that and refuses what is not
declared, so an app sees the truth about the EHR behind it.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from adapters.search import SearchParamDef, SearchQuery

# Interaction codes as in CapabilityStatement.rest.resource.interaction.code.
TYPE_INTERACTIONS = (
    "read", "vread", "update", "patch", "delete", "history-instance", "history-type",
    "create", "search-type",
)


@dataclass(frozen=True)
class TypeCapability:
    """What the EHR allows for one resource type."""

    interactions: frozenset[str]
    search_params: dict[str, SearchParamDef] = field(default_factory=dict)
    operations: frozenset[str] = frozenset()
    conditional_create: bool = False
    conditional_update: bool = False
    versioned: bool = True

    def allows(self, interaction: str) -> bool:
        return interaction in self.interactions

    @property
    def includes(self) -> list[str]:
        return sorted(p.name for p in self.search_params.values() if p.type == "reference")


@dataclass(frozen=True)
class Capabilities:
    """Per resource type capabilities, plus system-level interactions (transaction, batch)."""

    types: dict[str, TypeCapability]
    system_interactions: frozenset[str] = frozenset()
    software: str = "unknown"

    def for_type(self, resource_type: str) -> TypeCapability | None:
        return self.types.get(resource_type)


@dataclass
class SearchPage:
    """One page of search results: matches, included resources and cursors to move on."""

    resources: list[dict]
    included: list[dict] = field(default_factory=list)
    total: int | None = None
    next_cursor: str | None = None
    prev_cursor: str | None = None
    warnings: list[str] = field(default_factory=list)  # shown as an OperationOutcome entry
    # The Patient ids each resource references (`resources`, then `included`, in order), when
    # the adapter already has them (a cached page keeps them): the access checks reuse them
    # instead of walking every resource again. None: not known.
    patients: list[frozenset[str]] | None = None
    # Set by an adapter when the same search gives this very page for as long as
    # `Adapter.still_valid(validity)` says so (the REST adapter: while its cached copy is
    # fresh and no write went through the gateway to a type the search covers); a caller may
    # keep what it built from the page until then. None: never keep it.
    validity: object | None = None


@dataclass
class HistoryPage:
    """Versions of one resource, newest first; a deleted version has `resource` None."""

    entries: list[HistoryEntry]
    total: int
    next_cursor: str | None = None


@dataclass
class HistoryEntry:
    resource_type: str
    id: str
    version_id: str
    last_updated: str
    resource: dict | None
    method: str  # POST, PUT or DELETE


@dataclass
class WriteResult:
    """What a create/update/delete did: the stored resource (None after delete) and whether new."""

    resource: dict | None
    created: bool
    version_id: str | None = None
    last_updated: str | None = None


# The identifier system of the values the gateway assigns to what it creates, so that a
# create whose answer was lost can be found again (a replay, an undo) and never stored twice.
WRITE_ID_SYSTEM = "urn:fhir-gateway:write-id"


def assign_write_id(resource: dict) -> str:
    """Tag a resource to be created with an identifier of the gateway's, so that any replay
    can be a conditional create on it. Returns the identifier value."""
    value = uuid.uuid4().hex
    resource["identifier"] = [*(resource.get("identifier") or []),
                              {"system": WRITE_ID_SYSTEM, "value": value}]
    return value


def holds_what_was_sent(stored: dict, sent: dict) -> bool:
    """Does a stored resource hold what an update sent (meta aside: the server writes it)?
    Tells an update whose answer was lost, or whose retry met its own new version (412), from
    one that never landed."""
    return {k: v for k, v in stored.items() if k != "meta"} == \
        {k: v for k, v in sent.items() if k != "meta"}


@dataclass
class BundleEntryRequest:
    """One entry of a transaction/batch, already parsed and validated by the gateway."""

    method: str  # GET, POST, PUT, DELETE
    resource_type: str
    id: str | None = None
    resource: dict | None = None
    full_url: str | None = None
    if_none_exist: list[tuple[str, str]] | None = None
    if_match: str | None = None
    # a create's `WRITE_ID_SYSTEM` identifier value, if tagged; `if_none_exist` is then the
    # condition on it
    write_id: str | None = None
    query: SearchQuery | None = None  # for GET search entries
    url_query: str = ""  # the entry's query string, for the self link


@dataclass
class Notice:
    """Something the caller should know about an answer, e.g. that it came from a stale copy
    (`kind` "stale", `age` in seconds)."""

    kind: str
    text: str
    age: float | None = None


_NOTICES: ContextVar[list[Notice] | None] = ContextVar("adapter_notices", default=None)


def collect_notices() -> list[Notice]:
    """Start collecting notices for the current request; returns the list they land in."""
    notices: list[Notice] = []
    _NOTICES.set(notices)
    return notices


def add_notice(kind: str, text: str, age: float | None = None) -> None:
    notices = _NOTICES.get()
    if notices is not None:
        notices.append(Notice(kind, text, age))


class Adapter(ABC):
    """An EHR behind the gateway. Implementations must not import Flask."""

    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abstractmethod
    def read(self, resource_type: str, id: str) -> dict:
        """The current version; raises NotFound or Gone."""

    @abstractmethod
    def vread(self, resource_type: str, id: str, version_id: str) -> dict: ...

    @abstractmethod
    def history(
        self, resource_type: str, id: str, count: int, cursor: str | None = None
    ) -> HistoryPage: ...

    @abstractmethod
    def search(self, resource_type: str, query: SearchQuery) -> SearchPage: ...

    def search_to_show(self, resource_type: str, query: SearchQuery) -> SearchPage:
        """`search`, for a caller that only reads the resources it gets (to check and show
        them): an adapter may hand out shared, read-only ones (`mappings.frozen`), as the REST
        adapter does from its cache. The page itself is always the caller's own."""
        return self.search(resource_type, query)

    def read_to_show(self, resource_type: str, id: str) -> dict:
        """`read`, for a caller that only checks and shows the resource: an adapter may hand
        out a shared, read-only one (`mappings.frozen`), as the REST adapter does from its
        cache."""
        return self.read(resource_type, id)

    def still_valid(self, validity: object) -> bool:
        """Would the search whose page carried this `SearchPage.validity` give it again now?"""
        return False

    @abstractmethod
    def create(
        self, resource: dict, if_none_exist: SearchQuery | None = None
    ) -> WriteResult:
        """Store a new resource (server-assigned id). With `if_none_exist`, return the one match
        instead (created=False), or raise PreconditionFailed on several."""

    @abstractmethod
    def update(self, resource: dict, if_match: str | None = None) -> WriteResult:
        """Store a new version (or create with the client's id when allowed)."""

    @abstractmethod
    def delete(self, resource_type: str, id: str) -> WriteResult: ...

    @abstractmethod
    def transaction(
        self, entries: list[BundleEntryRequest]
    ) -> list[WriteResult | SearchPage | dict]:
        """Run all entries atomically (all or nothing), in the order FHIR prescribes."""

    def operation(self, name: str, resource_type: str | None, id: str | None,
                  parameters: dict[str, Any]) -> dict:
        """Run a named operation the adapter declared; none by default."""
        from adapters.errors import NotSupported

        raise NotSupported(f"Operation ${name} is not supported by this EHR")

    @abstractmethod
    def health(self) -> dict:
        """{'status': 'ok'|'degraded'|'down', ...details}; never raises."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release pools and connections."""
