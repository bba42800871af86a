"""What an HTTP function answers for what it raised: a refusal its 4xx, storage trouble a 503, a bug
re-raised (the host's 500 with a traceback) — a bug disguised as "temporarily unavailable" sends
callers to retry what can never work."""
from __future__ import annotations

import json

import pytest
from azure.core.exceptions import ServiceRequestError
from sqlalchemy.exc import DataError, OperationalError

from shared.blueprints.http import Refused, refused_or_unavailable
from shared.settings import SettingsError


def test_a_refusal_is_its_own_4xx() -> None:
    answer = refused_or_unavailable("r", Refused(400, "bad-date", expected="YYYY-MM-DD"))
    assert (answer.status_code, json.loads(answer.get_body())) == (400, {"error": "bad-date", "expected": "YYYY-MM-DD"})


@pytest.mark.parametrize("trouble", [
    OperationalError("SELECT 1", {}, Exception("connection refused")), ServiceRequestError("queue unreachable"),
    ConnectionResetError(), TimeoutError(), SettingsError("SYNC_TENANTS_JSON: not JSON")])
def test_storage_that_does_not_answer_is_a_503_with_retry_after(trouble: Exception) -> None:
    answer = refused_or_unavailable("r", trouble)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"


@pytest.mark.parametrize("bug", [OverflowError("date value out of range"), ZeroDivisionError(), KeyError("x"),
                                 TypeError("unsupported operand"),
                                 DataError("SELECT", {}, Exception("string literal cannot contain NUL"))])
def test_a_bug_is_raised_for_the_host_to_answer_500(bug: Exception) -> None:
    with pytest.raises(type(bug)):
        refused_or_unavailable("r", bug)
