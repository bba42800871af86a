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


def test_a_configuration_that_does_not_load_is_logged_with_what_to_fix(caplog: pytest.LogCaptureFixture) -> None:
    """A SettingsError's message names the setting and never its value (a missing ODBC driver, a
    tenants secret that is still the literal Key Vault reference): the operator reads it in the log."""
    message = "SYNC_ODBC_DRIVER: the ODBC driver 'ODBC Driver 18 for SQL Server' is not installed here"
    with caplog.at_level("ERROR", logger="shared.blueprints.http"):
        answer = refused_or_unavailable("health", SettingsError(message))
    assert answer.status_code == 503
    (record,) = caplog.records
    assert record.getMessage() == f"http route=health outcome=unavailable reason=SettingsError: {message}"
    caplog.clear()
    with caplog.at_level("ERROR", logger="shared.blueprints.http"):
        refused_or_unavailable("health", OperationalError("SELECT 1", {}, Exception("server at 10.0.0.5 refused")))
    assert caplog.records[0].getMessage() == "http route=health outcome=unavailable reason=OperationalError"
