"""What pyodbc would receive from the app and from a migration against Azure SQL.

No SQL Server runs here, so the engine is built by the real code (settings, URL, SQLAlchemy's
pyodbc dialect, the token hook, the connect retry) with a stand-in for the pyodbc module passed
in: its ``connect`` records the exact connection string and attributes and answers as told.
msodbcsql refuses an access token beside Trusted_Connection, UID, PWD or Authentication."""
from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from shared.settings import SettingsError, load_settings
from shared.store.engine import (
    CONNECT_RETRY_DELAYS,
    azure_sql_connect_string,
    connect_with_retry,
    create_store_engine,
    transient_connect_error,
)

SERVER = "sql-fhirmirror.database.windows.net"
URL = f"mssql+pyodbc://@{SERVER}/mirror"
DRIVER = "ODBC Driver 18 for SQL Server"
EXPECTED = (f"Driver={{{DRIVER}}};Server=tcp:{SERVER},1433;Database=mirror;"
            "Encrypt=yes;TrustServerCertificate=no;Connection Timeout=30")
FORBIDDEN_WITH_TOKEN = re.compile(r"(^|;)\s*(Trusted_Connection|Integrated Security|UID|User|User ID|PWD|Password|"
                                  r"Authentication)\s*=", re.IGNORECASE)
PAUSED = ("HY000", ("[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Database 'mirror' on server "
                   "'sql-fhirmirror' is not currently available.  Please retry the connection later. (40613) "
                   "(SQLDriverConnect)"))
LOGIN_FAILED = ("28000", ("[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Login failed for user "
                         "'<token-identified principal>'. (18456) (SQLDriverConnect)"))


class FakePyodbc:
    """Just enough of the pyodbc module for SQLAlchemy's dialect; ``connect`` records its call."""
    paramstyle = "qmark"
    version = "5.5.0"

    class Error(Exception):
        pass

    class OperationalError(Error):
        pass

    class Cursor:
        def nextset(self) -> None:
            pass

    def __init__(self, answers: Iterator[Exception], drivers: list[str] | None = None) -> None:
        self.answers, self.installed = answers, [DRIVER] if drivers is None else drivers
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def drivers(self) -> list[str]:
        return list(self.installed)

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        raise next(self.answers)


class Refused(FakePyodbc.Error):
    """The stand-in's answer to a connect: this test stops at the driver call."""

    def __init__(self) -> None:
        super().__init__("08001", "[stand-in] the test stops at the driver call")


def token_struct(token: str) -> bytes:
    """msodbcsql's ACCESS_TOKEN layout, written out independently: a little-endian 4-byte length
    in bytes, then the token in UTF-16-LE, no terminator."""
    body = b"".join(c.encode("ascii") + b"\x00" for c in token)
    return len(body).to_bytes(4, "little") + body


def refused() -> Iterator[Exception]:
    while True:
        yield Refused()


def assert_token_connect(call: tuple[tuple[Any, ...], dict[str, Any]], token: str) -> None:
    args, kwargs = call
    assert args == (EXPECTED,)
    assert not FORBIDDEN_WITH_TOKEN.search(args[0])
    assert set(kwargs) == {"attrs_before"}
    assert kwargs["attrs_before"] == {1256: token_struct(token)}
    (length,) = struct.unpack_from("<I", kwargs["attrs_before"][1256])
    assert length == 2 * len(token)


def test_the_app_connects_with_a_token_and_nothing_the_driver_refuses_beside_it() -> None:
    dbapi = FakePyodbc(refused())
    settings = load_settings(database_url=URL)
    engine = create_store_engine(settings, token_provider=lambda: "eyJ0eXAi.token", dbapi=dbapi)
    with pytest.raises(DBAPIError) as caught:
        engine.connect()
    assert isinstance(caught.value.orig, Refused)
    (call,) = dbapi.calls
    assert_token_connect(call, "eyJ0eXAi.token")


def test_a_migration_connects_the_same_way() -> None:
    from alembic import command

    from shared.store.migrate import alembic_config

    dbapi = FakePyodbc(refused())
    config = alembic_config(URL)
    config.attributes["engine_options"] = {"token_provider": lambda: "migration-token", "dbapi": dbapi}
    with pytest.raises(DBAPIError):
        command.upgrade(config, "head")
    (call,) = dbapi.calls
    assert_token_connect(call, "migration-token")


def test_url_options_pass_through_and_only_the_driver_is_taken_from_the_query() -> None:
    from sqlalchemy.engine import make_url

    url = make_url(f"mssql+pyodbc://@{SERVER}:14330/mirror?driver=ODBC+Driver+17+for+SQL+Server"
                   "&Connection+Timeout=60&ApplicationIntent=ReadOnly")
    assert azure_sql_connect_string(url, DRIVER, token=True) == (
        f"Driver={{ODBC Driver 17 for SQL Server}};Server=tcp:{SERVER},14330;Database=mirror;Encrypt=yes;"
        "TrustServerCertificate=no;Connection Timeout=60;ApplicationIntent=ReadOnly")


@pytest.mark.parametrize("option", ["Trusted_Connection=Yes", "UID=app", "Authentication=ActiveDirectoryMsi",
                                    "odbc_connect=Driver%3Dx"])
def test_a_url_option_the_driver_refuses_beside_a_token_is_a_settings_error(option: str) -> None:
    settings = load_settings(database_url=f"{URL}?{option}")
    dbapi = FakePyodbc(refused())
    if option.startswith("Authentication"):  # the driver signs in itself: no token is injected
        engine = create_store_engine(settings, token_provider=lambda: pytest.fail("no token"), dbapi=dbapi)
        with pytest.raises(DBAPIError):
            engine.connect()
        (args, kwargs), = dbapi.calls
        assert "Authentication=ActiveDirectoryMsi" in args[0] and "attrs_before" not in kwargs
        return
    with pytest.raises(SettingsError, match="SYNC_DATABASE_URL") as caught:
        create_store_engine(settings, token_provider=lambda: "t", dbapi=dbapi)
    assert "\n" not in str(caught.value)
    assert not dbapi.calls


def test_a_sql_login_sends_uid_and_pwd_and_no_token() -> None:
    dbapi = FakePyodbc(refused())
    settings = load_settings(database_url="mssql+pyodbc://mirror_app:p%3Bw%7Dd@localhost/mirror")
    engine = create_store_engine(settings, token_provider=lambda: pytest.fail("no token for SQL logins"), dbapi=dbapi)
    with pytest.raises(DBAPIError):
        engine.connect()
    (args, kwargs), = dbapi.calls
    assert args == ((f"Driver={{{DRIVER}}};Server=tcp:localhost,1433;Database=mirror;UID=mirror_app;"
                    "PWD={p;w}}d};Encrypt=yes;TrustServerCertificate=no;Connection Timeout=30"),)
    assert kwargs == {}


def test_a_missing_odbc_driver_fails_at_start_up_in_one_line_naming_both() -> None:
    dbapi = FakePyodbc(refused(), drivers=["ODBC Driver 17 for SQL Server", "PostgreSQL Unicode"])
    with pytest.raises(SettingsError) as caught:
        create_store_engine(load_settings(database_url=URL), token_provider=lambda: "t", dbapi=dbapi)
    message = str(caught.value)
    assert message == ("SYNC_ODBC_DRIVER: the ODBC driver 'ODBC Driver 18 for SQL Server' is not installed here; "
                       "installed ODBC drivers: 'ODBC Driver 17 for SQL Server', 'PostgreSQL Unicode' "
                       '(docs/store.md "Azure SQL")')
    none = FakePyodbc(refused(), drivers=[])
    with pytest.raises(SettingsError, match="installed ODBC drivers: none"):
        create_store_engine(load_settings(database_url=URL), token_provider=lambda: "t", dbapi=none)


def test_the_cli_says_so_too() -> None:
    """``python -m shared.cli migrate`` against Azure SQL on this machine: pyodbc loads, and
    Microsoft's driver is not installed, so the one line names it and what is installed."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-m", "shared.cli", "--database-url", URL, "migrate"], cwd=root,
                         capture_output=True, text=True, timeout=120, env=_env(root))
    assert run.returncode == 2, run.stderr
    (line,) = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert "SYNC_ODBC_DRIVER: the ODBC driver 'ODBC Driver 18 for SQL Server' is not installed here" in line
    assert "installed ODBC drivers:" in line


def _env(root: Any) -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(root)}


def test_a_paused_database_is_connected_to_again_with_bounded_backoff() -> None:
    answers = iter([FakePyodbc.OperationalError(*PAUSED), FakePyodbc.OperationalError(*PAUSED), Refused()])
    dbapi = FakePyodbc(answers)
    waits: list[float] = []
    tokens = iter(["t1", "t2", "t3"])
    engine = create_store_engine(load_settings(database_url=URL), token_provider=lambda: next(tokens),
                                 dbapi=dbapi, sleep=waits.append)
    with pytest.raises(DBAPIError):
        engine.connect()
    assert waits == [2.0, 4.0]
    # A fresh token for every attempt: a retry does not reuse one that may be about to lapse.
    assert [kwargs["attrs_before"] for _, kwargs in dbapi.calls] == [
        {1256: token_struct(t)} for t in ("t1", "t2", "t3")]


def test_retries_stop_after_the_last_delay_and_other_errors_are_not_retried() -> None:
    calls: list[int] = []
    waits: list[float] = []

    def connect(error: Exception) -> Callable[[], Any]:
        def attempt() -> Any:
            calls.append(1)
            raise error
        return attempt

    with pytest.raises(FakePyodbc.OperationalError):
        connect_with_retry(connect(FakePyodbc.OperationalError(*PAUSED)), sleep=waits.append)
    assert len(calls) == len(CONNECT_RETRY_DELAYS) + 1 and waits == list(CONNECT_RETRY_DELAYS)
    assert sum(CONNECT_RETRY_DELAYS) <= 90
    calls.clear()
    waits.clear()
    with pytest.raises(FakePyodbc.Error):
        connect_with_retry(connect(FakePyodbc.Error(*LOGIN_FAILED)), sleep=waits.append)
    assert len(calls) == 1 and waits == []


def test_transient_errors_are_read_from_the_drivers_message() -> None:
    assert transient_connect_error(FakePyodbc.OperationalError(*PAUSED)) == 40613
    assert transient_connect_error(FakePyodbc.Error(*LOGIN_FAILED)) is None
    assert transient_connect_error(FakePyodbc.Error("08S01", "... (40501) (SQLExecDirectW)")) == 40501
    assert transient_connect_error(ValueError("no number here")) is None
