"""Paginators as pure state machines (after dlt's): the state is a small JSON-able dict kept in
the run's checkpoint, ``request`` turns it into what to send, ``advance`` reads an answer and
returns the next state or None on the last page. The source does the sending."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

from shared.rest.paths import MISSING, lookup
from shared.rest.spec import Cursor, LinkHeader, NextLink, NoPaging, Offset, PageNumber, Paginator

State = dict[str, Any]
_LINK = re.compile(r'<([^>]*)>\s*((?:;\s*[\w*-]+\s*(?:=\s*(?:"[^"]*"|[^;,]*))?\s*)*)')
_REL_NEXT = re.compile(r';\s*rel\s*=\s*"?([^";]*)"?', re.I)


@dataclass(frozen=True)
class PageRequest:
    url: str | None  # a URL the source gave (next link, Link header) instead of the template's
    params: dict[str, str] = field(default_factory=dict)  # added to the template's query


def first_state(paginator: Paginator) -> State:
    if isinstance(paginator, PageNumber):
        return {"page": paginator.start}
    if isinstance(paginator, Offset):
        return {"offset": 0}
    return {}


def request(paginator: Paginator, state: State, page_size: int) -> PageRequest:
    size = getattr(paginator, "size_param", None)
    params = {size: str(page_size)} if size else {}
    if isinstance(paginator, PageNumber):
        return PageRequest(None, {**params, paginator.param: str(state["page"])})
    if isinstance(paginator, Offset):
        return PageRequest(None, {paginator.offset_param: str(state["offset"]), paginator.limit_param: str(page_size)})
    if isinstance(paginator, (NextLink, LinkHeader)) and state.get("url"):
        return PageRequest(state["url"])  # the link carries the whole query
    if isinstance(paginator, Cursor) and state.get("cursor"):
        return PageRequest(None, {**params, paginator.param: state["cursor"]})
    return PageRequest(None, params)


def advance(paginator: Paginator, state: State, *, body: Any, link_header: str | None, count: int,
            page_size: int, url: str) -> State | None:
    """The state for the page after this one (``count`` records came from ``url``), or None."""
    if isinstance(paginator, NoPaging):
        return None
    if isinstance(paginator, PageNumber):
        pages = lookup(body, paginator.total_pages) if paginator.total_pages else MISSING
        if isinstance(pages, int) and not isinstance(pages, bool):
            return {"page": state["page"] + 1} if state["page"] - paginator.start + 1 < pages else None
        # Without a page count: an empty page ends it, and so does a short one when we said the size.
        short = count < page_size if paginator.size_param else False
        return None if count == 0 or short else {"page": state["page"] + 1}
    if isinstance(paginator, Offset):
        offset = state["offset"] + count
        total = lookup(body, paginator.total) if paginator.total else MISSING
        if isinstance(total, int) and not isinstance(total, bool):
            return {"offset": offset} if offset < total and count > 0 else None
        return None if count < page_size else {"offset": offset}
    if isinstance(paginator, NextLink):
        target = lookup(body, paginator.path)
        return {"url": urljoin(url, target)} if isinstance(target, str) and target else None
    if isinstance(paginator, LinkHeader):
        target = next_link(link_header)
        return {"url": urljoin(url, target)} if target else None
    if isinstance(paginator, Cursor):
        cursor = lookup(body, paginator.path)
        if count == 0 or cursor is MISSING or cursor is None or cursor == "":
            return None
        return {"cursor": str(cursor)}
    raise TypeError(f"unknown paginator {paginator!r}")


def next_link(header: str | None) -> str | None:
    """The rel="next" target of a Link header (RFC 8288), if any."""
    for target, attributes in _LINK.findall(header or ""):
        for rel in _REL_NEXT.findall(attributes):
            if "next" in rel.lower().split():
                return target
    return None


def total_records(paginator: Paginator, body: Any) -> int | None:
    """The listing's size as the answer states it (offset paging with a total path), else None."""
    if isinstance(paginator, Offset) and paginator.total:
        total = lookup(body, paginator.total)
        return total if isinstance(total, int) and not isinstance(total, bool) else None
    return None
