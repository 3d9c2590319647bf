"""The embedded EHR: an SQL-backed FHIR R4 store (SQLite by default, PostgreSQL by URL)."""

from adapters.embedded.store import EmbeddedAdapter

__all__ = ["EmbeddedAdapter"]
