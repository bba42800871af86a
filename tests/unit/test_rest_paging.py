"""Paginators are pure state machines: each kind walks a listing and stops where it ends."""
from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from shared.rest.paging import PageRequest, advance, first_state, next_link, request, total_records
from shared.rest.spec import Paginator

ADAPTER: TypeAdapter[Paginator] = TypeAdapter(Paginator)


def paginator(**fields: Any) -> Paginator:
    return ADAPTER.validate_python(fields)


def walk(p: Paginator, answers: list[tuple[Any, str | None, int]], page_size: int,
         url: str = "http://src/v1/things") -> list[PageRequest]:
    """The requests a listing makes when the source gives these (body, Link header, count) answers."""
    state: dict[str, Any] | None = first_state(p)
    sent = []
    for body, link, count in answers:
        assert state is not None, "the listing went on past its last page"
        sent.append(request(p, state, page_size))
        state = advance(p, state, body=body, link_header=link, count=count, page_size=page_size, url=url)
    assert state is None, f"the listing did not stop: {state}"
    return sent


def test_page_numbers_stop_at_a_short_page() -> None:
    p = paginator(kind="page", param="page", start=1, size_param="per_page")
    sent = walk(p, [({}, None, 2), ({}, None, 2), ({}, None, 1)], page_size=2)
    assert [r.params for r in sent] == [{"per_page": "2", "page": str(n)} for n in (1, 2, 3)]


def test_page_numbers_follow_the_stated_page_count_zero_based() -> None:
    p = paginator(kind="page", param="page", start=0, size_param="size", total_pages="page.totalPages")
    body = {"page": {"totalPages": 3}}
    sent = walk(p, [(body, None, 5), (body, None, 5), (body, None, 5)], page_size=5)
    assert [r.params["page"] for r in sent] == ["0", "1", "2"]


def test_without_a_size_parameter_only_an_empty_page_ends_the_listing() -> None:
    p = paginator(kind="page", size_param=None)
    sent = walk(p, [({}, None, 3), ({}, None, 1), ({}, None, 0)], page_size=100)
    assert [r.params for r in sent] == [{"page": "1"}, {"page": "2"}, {"page": "3"}]


def test_offsets_count_what_came_and_stop_at_the_total() -> None:
    p = paginator(kind="offset", offset_param="skip", limit_param="take", total="meta.total")
    body = {"meta": {"total": 7}}
    sent = walk(p, [(body, None, 3), (body, None, 3), (body, None, 1)], page_size=3)
    assert [r.params for r in sent] == [{"skip": "0", "take": "3"}, {"skip": "3", "take": "3"},
                                        {"skip": "6", "take": "3"}]
    assert total_records(p, body) == 7


def test_a_next_link_in_the_body_is_followed_and_made_absolute() -> None:
    p = paginator(kind="next-link", path="links.next", size_param="per_page")
    sent = walk(p, [({"links": {"next": "/v1/things?page=2&per_page=2"}}, None, 2),
                    ({"links": {"next": "http://src/v1/things?page=3&per_page=2"}}, None, 2),
                    ({"links": {}}, None, 1)], page_size=2)
    assert sent == [PageRequest(None, {"per_page": "2"}), PageRequest("http://src/v1/things?page=2&per_page=2"),
                    PageRequest("http://src/v1/things?page=3&per_page=2")]


def test_a_link_header_is_followed() -> None:
    p = paginator(kind="link-header")
    header = '<http://src/v1/things?page=1>; rel="prev", <http://src/v1/things?page=3>; rel="next"'
    sent = walk(p, [({}, header, 10), ({}, '<http://src/v1/things?page=1>; rel="first"', 10)], page_size=10)
    assert sent[1] == PageRequest("http://src/v1/things?page=3")


@pytest.mark.parametrize(("header", "target"), [
    ('<a>; rel="next"', "a"), ("<a>; rel=next", "a"), ('<a>; rel="prev next"', "a"), ('<a>; rel="last"', None),
    ('<a,b>; title="x, y"; rel="next"', "a,b"), ("", None), (None, None)])
def test_link_header_parsing(header: str | None, target: str | None) -> None:
    assert next_link(header) == target


def test_a_cursor_is_sent_back_until_the_source_stops_giving_one() -> None:
    p = paginator(kind="cursor", path="meta.nextCursor", param="cursor", size_param="pageSize")
    sent = walk(p, [({"meta": {"nextCursor": "abc"}}, None, 2), ({"meta": {"nextCursor": 17}}, None, 2),
                    ({"meta": {"nextCursor": None}}, None, 2)], page_size=2)
    assert [r.params for r in sent] == [{"pageSize": "2"}, {"pageSize": "2", "cursor": "abc"},
                                        {"pageSize": "2", "cursor": "17"}]


def test_a_cursor_with_an_empty_page_stops_even_if_a_cursor_comes_back() -> None:
    p = paginator(kind="cursor", path="next")
    assert advance(p, {}, body={"next": "again"}, link_header=None, count=0, page_size=5, url="http://s/") is None


def test_no_paging_is_one_request() -> None:
    assert walk(paginator(kind="none"), [({"items": []}, None, 500)], page_size=10) == [PageRequest(None, {})]
