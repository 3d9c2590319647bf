"""Searchset and history Bundles with their links (pure: no I/O, no Flask)."""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlencode

from adapters.base import HistoryPage, SearchPage
from fhir_gateway.errors import issue, operation_outcome


def page_url(base: str, path: str, params: list[tuple[str, str]],
             cursor: str | None = None) -> str:
    """A search page's link: the parameters kept (`_cursor` replaced by this page's)."""
    return _page_url(base, path, tuple(params), cursor)


@lru_cache(maxsize=1024)  # urlencode is slow; the same pages are linked again and again
def _page_url(base: str, path: str, params: tuple[tuple[str, str], ...],
              cursor: str | None) -> str:
    items = [(k, v) for k, v in params if k != "_cursor"]
    if cursor:
        items.append(("_cursor", cursor))
    query = urlencode(items, safe="|:/,")
    return f"{base}/{path}" + (f"?{query}" if query else "")


def _entry_for(base: str, resource: dict, mode: str) -> dict:
    return {"fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}",
            "resource": resource, "search": {"mode": mode}}


def searchset(base: str, page: SearchPage, self_url: str, next_url: str | None,
              prev_url: str | None, warnings: list[str]) -> dict:
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    if prev_url:
        links.append({"relation": "previous", "url": prev_url})
    bundle: dict = {"resourceType": "Bundle", "type": "searchset"}
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = links
    entries = [_entry_for(base, r, "match") for r in page.resources]
    entries += [_entry_for(base, r, "include") for r in page.included]
    if warnings:
        entries.append({
            "resource": operation_outcome([issue("warning", "not-supported", w)
                                           for w in warnings]),
            "search": {"mode": "outcome"},
        })
    if entries:
        bundle["entry"] = entries
    return bundle


def history(base: str, page: HistoryPage, self_url: str, next_url: str | None) -> dict:
    entries = []
    for e in page.entries:
        full = f"{base}/{e.resource_type}/{e.id}"
        entry: dict = {"fullUrl": full}
        if e.resource is not None:
            entry["resource"] = e.resource
        url = f"{e.resource_type}/{e.id}" if e.method != "POST" else e.resource_type
        entry["request"] = {"method": e.method, "url": url}
        status = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}[e.method]
        entry["response"] = {"status": status, "etag": f'W/"{e.version_id}"',
                             "lastModified": e.last_updated}
        entries.append(entry)
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    out = {"resourceType": "Bundle", "type": "history", "total": page.total, "link": links}
    if entries:
        out["entry"] = entries
    return out
