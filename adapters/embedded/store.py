"""The embedded EHR: a FHIR R4 store in SQL through SQLAlchemy (SQLite file or PostgreSQL).

Every write runs in one database transaction that stores the new version, keeps the old one in
`resource_version` and rewrites the search index rows, so a reader never sees a resource without
its index. A transaction Bundle is one database transaction: all of it or none of it.
"""

from __future__ import annotations

import base64
import binascii
import threading
import uuid
from collections.abc import Iterable
from contextlib import contextmanager

import orjson
from sqlalchemy import Connection, and_, create_engine, delete, event, func, insert, or_, select
from sqlalchemy import update as sql_update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from adapters.base import (
    Adapter,
    BundleEntryRequest,
    Capabilities,
    HistoryEntry,
    HistoryPage,
    SearchPage,
    TypeCapability,
    WriteResult,
)
from adapters.embedded import indexer
from adapters.embedded.params import params_for
from adapters.embedded.query import clause_condition, sort_column
from adapters.embedded.schema import (
    INDEX_TABLES,
    INDEX_VERSION,
    idx_date,
    idx_ref,
    idx_string,
    idx_token,
    metadata,
    resource,
    resource_version,
    store_meta,
)
from adapters.errors import Conflict, Gone, Invalid, NotFound, PreconditionFailed
from adapters.search import (
    IncludeSpec,
    SearchParamDef,
    SearchQuery,
    is_number,
    now_stamp,
    stamp_to_instant,
    valid_id,
)
from mappings.r4 import RESOURCE_TYPES
from mappings.references import rewrite_references

ALL_INTERACTIONS = frozenset(
    {"read", "vread", "update", "delete", "history-instance", "create", "search-type"}
)
COMMON_PARAMS = {
    "_id": SearchParamDef("_id", "token", "Logical id of the resource"),
    "_lastUpdated": SearchParamDef("_lastUpdated", "date", "When the resource last changed"),
    "_compartment": SearchParamDef(
        "_compartment", "special",
        "Patient id: only resources in that patient's compartment that name no other patient "
        "(the gateway narrows patient-context tokens with it)"),
}
# Types a client may not store as resources of their own.
NOT_STORABLE = frozenset({"Bundle", "OperationOutcome", "Parameters", "CapabilityStatement"})
MAX_INCLUDED = 1000


def _dumps(obj: dict) -> bytes:
    return orjson.dumps(obj)


def _encode_cursor(payload: dict) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def _decode_cursor(cursor: str) -> dict:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise Invalid("The paging cursor is not valid", expression="_cursor") from None
    if not isinstance(payload, dict):
        raise Invalid("The paging cursor is not valid", expression="_cursor")
    return payload


def make_engine(url: str) -> Engine:
    """An engine for SQLite (WAL, immediate write transactions) or any SQLAlchemy URL."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # pragma: no cover - driver hook
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # pragma: no cover - driver hook
            mode = "IMMEDIATE" if conn.get_execution_options().get("write") else "DEFERRED"
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10,
                         hide_parameters=True)


class EmbeddedAdapter(Adapter):
    """FHIR R4 store over SQL. Thread-safe: each call takes its own connection."""

    def __init__(self, database_url: str, *, create: bool = True) -> None:
        self.url = database_url
        self.engine = make_engine(database_url)
        self._stamp_lock = threading.Lock()
        self._last_stamp = ""
        self._caps: Capabilities | None = None
        if create:
            metadata.create_all(self.engine)
            self._upgrade_index()

    # -- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _write(self):
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            yield conn

    @contextmanager
    def _read(self):
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def _now(self) -> str:
        """A strictly increasing timestamp, so versions in one process never share one."""
        with self._stamp_lock:
            stamp = now_stamp()
            if stamp <= self._last_stamp:
                stamp = self._last_stamp[:-6] + f"{int(self._last_stamp[-6:]) + 1:06d}"
            self._last_stamp = stamp
            return stamp

    def close(self) -> None:
        self.engine.dispose()

    def _upgrade_index(self) -> None:
        """Re-index every live resource once when the store was indexed by an older version."""
        with self._write() as conn:
            row = conn.execute(select(store_meta.c.value).where(
                store_meta.c.key == "index_version")).first()
            current = int(row.value) if row else (0 if conn.execute(
                select(resource.c.rid).limit(1)).first() else INDEX_VERSION)
            if current >= INDEX_VERSION and row:
                return
            if current < INDEX_VERSION:
                rows = conn.execute(select(resource.c.rid, resource.c.type, resource.c.body)
                                    .where(resource.c.deleted.is_(False))).all()
                for table in INDEX_TABLES:
                    conn.execute(delete(table))
                for rid, rtype, body in rows:
                    self._insert_index(conn, rid, rtype, indexer.index(orjson.loads(body)))
            conn.execute(delete(store_meta).where(store_meta.c.key == "index_version"))
            conn.execute(insert(store_meta).values(key="index_version",
                                                   value=str(INDEX_VERSION)))

    # -- capabilities ---------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        if self._caps is None:
            self._caps = self._capabilities()
        return self._caps

    def _capabilities(self) -> Capabilities:
        types = {}
        for rtype in sorted(RESOURCE_TYPES - NOT_STORABLE):
            params = dict(COMMON_PARAMS)
            params.update({name: p.definition() for name, p in params_for(rtype).items()})
            types[rtype] = TypeCapability(
                interactions=ALL_INTERACTIONS,
                search_params=params,
                conditional_create=True,
                conditional_update=False,
            )
        return Capabilities(types=types, system_interactions=frozenset({"transaction", "batch"}),
                            software="fhir-gateway embedded store")

    def health(self) -> dict:
        try:
            with self._read() as conn:
                conn.execute(select(func.count()).select_from(resource).limit(1)).scalar()
            return {"status": "ok", "store": self.engine.dialect.name}
        except Exception as exc:  # noqa: BLE001 - health never raises
            return {"status": "down", "store": self.engine.dialect.name,
                    "error": type(exc).__name__}

    # -- reads ----------------------------------------------------------------------------

    def read(self, resource_type: str, id: str) -> dict:
        with self._read() as conn:
            return self._read_current(conn, resource_type, id)

    def _read_current(self, conn: Connection, rtype: str, id: str) -> dict:
        row = conn.execute(
            select(resource.c.body, resource.c.deleted, resource.c.version_id).where(
                resource.c.type == rtype, resource.c.id == id)
        ).first()
        if row is None:
            raise NotFound(f"{rtype}/{id} is not known", expression=rtype)
        if row.deleted:
            raise Gone(f"{rtype}/{id} was deleted (version {row.version_id})", expression=rtype)
        return orjson.loads(row.body)

    def vread(self, resource_type: str, id: str, version_id: str) -> dict:
        if not is_number(version_id):
            raise NotFound(f"{resource_type}/{id} has no version {version_id!r}")
        with self._read() as conn:
            row = conn.execute(
                select(resource_version.c.body).where(
                    resource_version.c.type == resource_type, resource_version.c.id == id,
                    resource_version.c.version_id == int(version_id))
            ).first()
        if row is None:
            raise NotFound(f"{resource_type}/{id} has no version {version_id}")
        if row.body is None:
            raise Gone(f"Version {version_id} of {resource_type}/{id} is a deletion")
        return orjson.loads(row.body)

    def history(self, resource_type: str, id: str, count: int,
                cursor: str | None = None) -> HistoryPage:
        rv = resource_version
        where = [rv.c.type == resource_type, rv.c.id == id]
        with self._read() as conn:
            total = conn.execute(select(func.count()).select_from(rv).where(*where)).scalar()
            if not total:
                raise NotFound(f"{resource_type}/{id} is not known")
            if cursor:
                before = _decode_cursor(cursor).get("v")
                if not isinstance(before, int):
                    raise Invalid("The paging cursor is not valid", expression="_cursor")
                where.append(rv.c.version_id < before)
            rows = conn.execute(
                select(rv).where(*where).order_by(rv.c.version_id.desc()).limit(count + 1)
            ).all()
        more = len(rows) > count
        rows = rows[:count]
        entries = [
            HistoryEntry(resource_type, id, str(r.version_id), stamp_to_instant(r.last_updated),
                         orjson.loads(r.body) if r.body is not None else None, r.method)
            for r in rows
        ]
        nxt = _encode_cursor({"v": rows[-1].version_id}) if more and rows else None
        return HistoryPage(entries=entries, total=total, next_cursor=nxt)

    # -- search ---------------------------------------------------------------------------

    def search(self, resource_type: str, query: SearchQuery) -> SearchPage:
        with self._read() as conn:
            return self._search(conn, resource_type, query)

    def _conditions(self, rtype: str, query: SearchQuery) -> list:
        known = params_for(rtype)
        conds = [resource.c.type == rtype, resource.c.deleted.is_(False)]
        for clause in query.clauses:
            targets = known[clause.name].targets if clause.name in known else ()
            conds.append(clause_condition(rtype, clause, targets))
        return conds

    def _search(self, conn: Connection, rtype: str, query: SearchQuery) -> SearchPage:
        conds = self._conditions(rtype, query)
        total = None
        if query.with_total or query.summary_count:
            total = conn.execute(
                select(func.count()).select_from(resource).where(*conds)).scalar()
        if query.summary_count:
            return SearchPage(resources=[], total=total)

        key, desc = (query.sort[0] if query.sort else (None, False))
        col = sort_column(rtype, key) if key else None
        sort_sig = f"{'-' if desc else ''}{key or ''}"
        backwards = False
        where = list(conds)
        if query.cursor:
            cur = _decode_cursor(query.cursor)
            if cur.get("s") != sort_sig or not isinstance(cur.get("r"), int):
                raise Invalid("The paging cursor does not belong to this search",
                              expression="_cursor")
            backwards = cur.get("d") == "p"
            forward_desc = desc != backwards  # direction of this scan
            rid_cmp = resource.c.rid < cur["r"] if forward_desc else resource.c.rid > cur["r"]
            if col is None:
                where.append(rid_cmp)
            else:
                k = cur.get("k")
                if not isinstance(k, str):
                    raise Invalid("The paging cursor is not valid", expression="_cursor")
                key_cmp = col < k if forward_desc else col > k
                where.append(or_(key_cmp, and_(col == k, rid_cmp)))
        scan_desc = desc != backwards
        order = []
        if col is not None:
            order.append(col.desc() if scan_desc else col.asc())
        order.append(resource.c.rid.desc() if scan_desc else resource.c.rid.asc())
        cols = [resource.c.rid, resource.c.body] + ([col.label("k")] if col is not None else [])
        rows = conn.execute(
            select(*cols).where(*where).order_by(*order).limit(query.count + 1)).all()
        more = len(rows) > query.count
        rows = rows[: query.count]
        if backwards:
            rows.reverse()

        def cursor_at(row, direction: str) -> str:
            payload = {"s": sort_sig, "r": row.rid, "d": direction}
            if col is not None:
                payload["k"] = row.k
            return _encode_cursor(payload)

        next_cursor = prev_cursor = None
        if rows:
            has_next = more if not backwards else True
            has_prev = (more if backwards else bool(query.cursor))
            next_cursor = cursor_at(rows[-1], "n") if has_next else None
            prev_cursor = cursor_at(rows[0], "p") if has_prev else None
        resources = [orjson.loads(r.body) for r in rows]
        included = self._included(conn, rtype, [r.rid for r in rows], resources, query)
        return SearchPage(resources=resources, included=included, total=total,
                          next_cursor=next_cursor, prev_cursor=prev_cursor)

    def _included(self, conn: Connection, rtype: str, rids: list[int], page: list[dict],
                  query: SearchQuery) -> list[dict]:
        if not rids or not (query.include or query.revinclude):
            return []
        wanted: set[tuple[str, str]] = set()
        for spec in query.include:
            if spec.source_type != rtype:
                continue
            stmt = select(idx_ref.c.target_type, idx_ref.c.target_id).where(
                idx_ref.c.rid.in_(rids), idx_ref.c.rtype == rtype, idx_ref.c.param == spec.param)
            if spec.target_type:
                stmt = stmt.where(idx_ref.c.target_type == spec.target_type)
            wanted.update((t, i) for t, i in conn.execute(stmt))
        seen = {(r["resourceType"], r["id"]) for r in page}
        out = self._fetch_many(conn, wanted - seen)
        seen.update((r["resourceType"], r["id"]) for r in out)
        ids = [r["id"] for r in page]
        for spec in query.revinclude:
            stmt = (
                select(resource.c.type, resource.c.id, resource.c.body)
                .join(idx_ref, idx_ref.c.rid == resource.c.rid)
                .where(idx_ref.c.rtype == spec.source_type, idx_ref.c.param == spec.param,
                       idx_ref.c.target_type == rtype, idx_ref.c.target_id.in_(ids),
                       resource.c.deleted.is_(False))
                .limit(MAX_INCLUDED)
            )
            for t, i, body in conn.execute(stmt):
                if (t, i) not in seen:
                    seen.add((t, i))
                    out.append(orjson.loads(body))
        return out[:MAX_INCLUDED]

    def _fetch_many(self, conn: Connection, keys: Iterable[tuple[str, str]]) -> list[dict]:
        by_type: dict[str, list[str]] = {}
        for t, i in keys:
            by_type.setdefault(t, []).append(i)
        out = []
        for t, ids in sorted(by_type.items()):
            rows = conn.execute(
                select(resource.c.body).where(resource.c.type == t, resource.c.id.in_(ids),
                                              resource.c.deleted.is_(False))
                .order_by(resource.c.rid)).all()
            out.extend(orjson.loads(r.body) for r in rows)
        return out

    # -- writes ---------------------------------------------------------------------------

    def create(self, resource_body: dict, if_none_exist: SearchQuery | None = None) -> WriteResult:
        with self._write() as conn:
            return self._create(conn, resource_body, if_none_exist)

    def update(self, resource_body: dict, if_match: str | None = None) -> WriteResult:
        with self._write() as conn:
            return self._put(conn, resource_body, if_match)

    def delete(self, resource_type: str, id: str) -> WriteResult:
        with self._write() as conn:
            return self._delete(conn, resource_type, id)

    def _create(self, conn: Connection, body: dict, if_none_exist: SearchQuery | None,
                new_id: str | None = None) -> WriteResult:
        rtype = body["resourceType"]
        if if_none_exist is not None:
            found = self._match_ids(conn, rtype, if_none_exist)
            if len(found) > 1:
                raise PreconditionFailed(
                    f"If-None-Exist matched {len(found)} {rtype} resources; expected at most one",
                    expression="If-None-Exist")
            if found:
                existing = self._read_current(conn, rtype, found[0])
                return WriteResult(existing, created=False,
                                   version_id=existing["meta"]["versionId"],
                                   last_updated=existing["meta"]["lastUpdated"])
        body = dict(body, id=new_id or str(uuid.uuid4()))
        return self._store(conn, body, "POST", None)

    def _match_ids(self, conn: Connection, rtype: str, query: SearchQuery) -> list[str]:
        rows = conn.execute(select(resource.c.id).where(*self._conditions(rtype, query))
                            .limit(2)).all()
        return [r.id for r in rows]

    def _put(self, conn: Connection, body: dict, if_match: str | None) -> WriteResult:
        if not valid_id(str(body.get("id", ""))):
            raise Invalid("An update needs a valid resource id", expression="id")
        return self._store(conn, body, "PUT", if_match)

    def _store(self, conn: Connection, body: dict, method: str,
               if_match: str | None) -> WriteResult:
        rtype, rid_text = body["resourceType"], body["id"]
        row = conn.execute(
            select(resource.c.rid, resource.c.version_id, resource.c.deleted)
            .where(resource.c.type == rtype, resource.c.id == rid_text)
            .with_for_update()
        ).first()
        if row is not None and method == "POST":
            raise Conflict(f"{rtype}/{rid_text} already exists")
        if if_match is not None:
            current = str(row.version_id) if row is not None and not row.deleted else None
            if current != if_match:
                raise PreconditionFailed(
                    f"If-Match expected version {if_match} of {rtype}/{rid_text}, "
                    f"but the current version is {current or 'none'}",
                    expression="If-Match")
        version = 1 if row is None else row.version_id + 1
        stamp = self._now()
        meta = dict(body.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = stamp_to_instant(stamp)
        stored = {"resourceType": rtype, "id": rid_text, "meta": meta}
        stored.update({k: v for k, v in body.items() if k not in stored})
        rows = indexer.index(stored)
        data = _dumps(stored)
        if row is None:
            try:
                rid = conn.execute(
                    insert(resource).values(type=rtype, id=rid_text, version_id=version,
                                            last_updated=stamp, sort_date=rows.sort_date,
                                            deleted=False, body=data)
                ).inserted_primary_key[0]
            except IntegrityError:
                raise Conflict(f"{rtype}/{rid_text} was created concurrently") from None
        else:
            rid = row.rid
            done = conn.execute(
                sql_update(resource)
                .where(resource.c.rid == rid, resource.c.version_id == row.version_id)
                .values(version_id=version, last_updated=stamp, sort_date=rows.sort_date,
                        deleted=False, body=data)
            ).rowcount
            if done != 1:
                raise Conflict(f"{rtype}/{rid_text} changed concurrently; retry")
            for table in INDEX_TABLES:
                conn.execute(delete(table).where(table.c.rid == rid))
        conn.execute(insert(resource_version).values(
            type=rtype, id=rid_text, version_id=version, last_updated=stamp,
            method=method, body=data))
        self._insert_index(conn, rid, rtype, rows)
        created = row is None or bool(row.deleted)
        return WriteResult(stored, created=created, version_id=str(version),
                           last_updated=meta["lastUpdated"])

    @staticmethod
    def _insert_index(conn: Connection, rid: int, rtype: str, rows: indexer.IndexRows) -> None:
        if rows.tokens:
            conn.execute(insert(idx_token), [
                {"rid": rid, "rtype": rtype, "param": p, "system": s, "code": c}
                for p, s, c in rows.tokens])
        if rows.strings:
            conn.execute(insert(idx_string), [
                {"rid": rid, "rtype": rtype, "param": p, "value": v, "raw": raw}
                for p, v, raw in rows.strings])
        if rows.dates:
            conn.execute(insert(idx_date), [
                {"rid": rid, "rtype": rtype, "param": p, "low": lo, "high": hi}
                for p, lo, hi in rows.dates])
        if rows.refs:
            conn.execute(insert(idx_ref), [
                {"rid": rid, "rtype": rtype, "param": p, "target_type": t, "target_id": i}
                for p, t, i in rows.refs])

    def _delete(self, conn: Connection, rtype: str, id: str) -> WriteResult:
        row = conn.execute(
            select(resource.c.rid, resource.c.version_id, resource.c.deleted)
            .where(resource.c.type == rtype, resource.c.id == id).with_for_update()
        ).first()
        if row is None:
            raise NotFound(f"{rtype}/{id} is not known", expression=rtype)
        if row.deleted:
            return WriteResult(None, created=False, version_id=str(row.version_id))
        version = row.version_id + 1
        stamp = self._now()
        conn.execute(sql_update(resource).where(resource.c.rid == row.rid).values(
            version_id=version, last_updated=stamp, deleted=True, body=None, sort_date=""))
        for table in INDEX_TABLES:
            conn.execute(delete(table).where(table.c.rid == row.rid))
        conn.execute(insert(resource_version).values(
            type=rtype, id=id, version_id=version, last_updated=stamp, method="DELETE",
            body=None))
        return WriteResult(None, created=False, version_id=str(version),
                           last_updated=stamp_to_instant(stamp))

    # -- transactions ---------------------------------------------------------------------

    def transaction(self, entries: list[BundleEntryRequest]) -> list:
        """All entries in one database transaction, in FHIR's order: DELETE, POST, PUT, GET.

        POST entries get their ids first, so every reference to their `fullUrl` (a `urn:uuid:`
        or the like) is rewritten before anything is stored; results come back in entry order.
        """
        order = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3}
        with self._write() as conn:
            ids: dict[str, str] = {}
            for entry in entries:
                if entry.method == "POST" and entry.full_url:
                    found = []
                    if entry.if_none_exist is not None:
                        found = self._match_ids(conn, entry.resource_type, entry.if_none_exist)
                        if len(found) > 1:
                            raise PreconditionFailed(
                                f"If-None-Exist of {entry.full_url} matched {len(found)} "
                                "resources", expression="Bundle.entry.request.ifNoneExist")
                    new_id = found[0] if found else str(uuid.uuid4())
                    ids[entry.full_url] = f"{entry.resource_type}/{new_id}"
                elif entry.method == "PUT" and entry.full_url and entry.id:
                    ids[entry.full_url] = f"{entry.resource_type}/{entry.id}"

            def change(ref: str) -> str | None:
                return ids.get(ref)

            results: list = [None] * len(entries)
            for pos in sorted(range(len(entries)), key=lambda i: order[entries[i].method]):
                entry = entries[pos]
                body = rewrite_references(entry.resource, change) if entry.resource else None
                if entry.method == "DELETE":
                    try:
                        results[pos] = self._delete(conn, entry.resource_type, entry.id)
                    except NotFound:
                        results[pos] = WriteResult(None, created=False)
                elif entry.method == "POST":
                    new_id = None
                    if entry.full_url in ids:
                        new_id = ids[entry.full_url].split("/", 1)[1]
                        exists = conn.execute(select(resource.c.rid).where(
                            resource.c.type == entry.resource_type, resource.c.id == new_id,
                            resource.c.deleted.is_(False))).first()
                        if exists and entry.if_none_exist is not None:
                            current = self._read_current(conn, entry.resource_type, new_id)
                            results[pos] = WriteResult(
                                current, created=False,
                                version_id=current["meta"]["versionId"],
                                last_updated=current["meta"]["lastUpdated"])
                            continue
                    results[pos] = self._create(conn, body, entry.if_none_exist
                                                if entry.full_url not in ids else None, new_id)
                elif entry.method == "PUT":
                    results[pos] = self._put(conn, body, entry.if_match)
                elif entry.id:
                    results[pos] = self._read_current(conn, entry.resource_type, entry.id)
                else:
                    results[pos] = self._search(conn, entry.resource_type,
                                                entry.query or SearchQuery())
            return results

    def load(self, resources: Iterable[dict]) -> int:
        """Store resources with their own ids in one transaction (seeding); returns the count."""
        count = 0
        with self._write() as conn:
            for body in resources:
                self._store(conn, body, "PUT", None)
                count += 1
        return count

    def count(self, resource_type: str | None = None) -> int:
        """Live resources, of one type or all (used by the CLI and tests)."""
        stmt = select(func.count()).select_from(resource).where(resource.c.deleted.is_(False))
        if resource_type:
            stmt = stmt.where(resource.c.type == resource_type)
        with self._read() as conn:
            return conn.execute(stmt).scalar()

    def iter_all(self, batch: int = 500) -> Iterable[dict]:
        """Every live resource, in storage order (for integrity checks and export)."""
        last = 0
        while True:
            with self._read() as conn:
                rows = conn.execute(
                    select(resource.c.rid, resource.c.body)
                    .where(resource.c.rid > last, resource.c.deleted.is_(False))
                    .order_by(resource.c.rid).limit(batch)).all()
            if not rows:
                return
            for r in rows:
                yield orjson.loads(r.body)
            last = rows[-1].rid


__all__ = ["EmbeddedAdapter", "IncludeSpec", "make_engine"]
