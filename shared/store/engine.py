"""Engines for SQLite, PostgreSQL and Azure SQL, and the write-transaction helper."""
from __future__ import annotations

import logging
import re
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError

from shared.identity import EntraToken, azure_credential
from shared.settings import Settings, SettingsError

log = logging.getLogger(__name__)

# msodbcsql's pre-connect attribute for an Entra access token (see Microsoft's
# "Using Microsoft Entra ID with the ODBC Driver" / pyodbc attrs_before).
SQL_COPT_SS_ACCESS_TOKEN = 1256
AZURE_SQL_TOKEN_SCOPE = "https://database.windows.net/.default"
# Keywords msodbcsql refuses beside an access token (lower-cased; Trusted_Connection is
# Integrated Security's other name, UID and PWD are User and Password's).
TOKEN_CONFLICTS = ("trusted_connection", "integrated security", "uid", "user", "user id", "pwd", "password",
                   "authentication")
# Microsoft's recommended connection options for Azure SQL: encrypt and check the server's
# certificate, and give a login 30 s (a serverless database takes time to resume).
CONNECT_DEFAULTS = {"Encrypt": "yes", "TrustServerCertificate": "no", "Connection Timeout": "30"}
# Azure SQL errors a connect may meet while the database is resuming, moving or busy (Microsoft's
# "transient errors" list for Azure SQL Database); anything else fails at once.
TRANSIENT_CONNECT_ERRORS = {
    40613: "database not currently available: resuming from auto-pause or failing over",
    40197: "the service had an error processing the request",
    40501: "the service is busy",
    49918: "not enough resources to process the request",
    49919: "too many create or update operations in progress",
    49920: "too many operations in progress",
}
# About a minute in all: a serverless database's resume takes up to about that long.
CONNECT_RETRY_DELAYS = (2.0, 4.0, 8.0, 16.0, 30.0)


def create_store_engine(settings: Settings, *, token_provider: Callable[[], str] | None = None,
                        dbapi: Any = None, sleep: Callable[[float], None] = time.sleep) -> Engine:
    """The engine for ``settings.database_url``. Azure SQL only: ``token_provider`` gives the Entra
    token (default: the app's identity), ``dbapi`` stands in for pyodbc (tests), ``sleep`` waits
    between connect attempts."""
    url = make_url(settings.database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url)
    if backend == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        # Batches bind whole arrays; a generic plan (chosen after 5 runs of a prepared statement,
        # costed on stale statistics while a table fills) scans the array once per row —
        # 100x slower than the custom plan that hashes it or probes the key index.
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10,
                             # UTC sessions: timestamptz values become naive UTC columns.
                             connect_args={"options": "-c plan_cache_mode=force_custom_plan -c TimeZone=UTC"})
    if backend == "mssql":
        return _azure_sql_engine(url, settings, token_provider, dbapi, sleep)
    raise ValueError(f"unsupported database backend {backend!r}")


def _sqlite_engine(url: Any) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event own transactions so writers can take the lock up front.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        # Bulk upserts touch index pages at random: a 64 MiB page cache and a 40 MiB WAL between
        # checkpoints roughly double insert speed over the defaults (2 MiB, 4 MiB).
        cursor.execute("PRAGMA cache_size=-65536")
        cursor.execute("PRAGMA wal_autocheckpoint=10000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # A deferred transaction that reads and then writes can fail with "database is locked"
        # when another writer upgraded first; writers ask for IMMEDIATE to queue on the lock.
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def safe_url(url: str) -> str:
    """The database URL with its password masked, for messages and banners."""
    return make_url(url).render_as_string(hide_password=True)


def driver(conn: Connection) -> Any:
    """The DBAPI connection under a SQLAlchemy connection (psycopg's, sqlite3's): checked out, so
    never None here."""
    raw = conn.connection.driver_connection
    assert raw is not None
    return raw


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction meant to write: committed on success, rolled back on error."""
    with engine.connect() as conn:
        conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


def insert_ignore(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> int:
    """Insert rows, skipping those whose key exists; returns how many were inserted (exact for a
    single row). One statement on PostgreSQL and SQLite (a savepoint per row cost two round trips
    each); Azure SQL keeps the savepoint per row."""
    if not rows:
        return 0
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        from sqlalchemy.dialects import postgresql, sqlite

        module = postgresql if dialect == "postgresql" else sqlite
        stmt = module.insert(table).on_conflict_do_nothing()
        if len(rows) == 1:  # RETURNING: psycopg reports rowcount -1 for this statement
            key = next(iter(table.primary_key.columns))
            return len(conn.execute(stmt.values(**rows[0]).returning(key)).all())
        return max(conn.execute(stmt, rows).rowcount, 0)
    inserted = 0
    for row in rows:
        try:
            with conn.begin_nested():
                conn.execute(table.insert().values(**row))
            inserted += 1
        except IntegrityError:
            pass
    return inserted


def access_token_attrs(token: str) -> dict[int, bytes]:
    """The ``attrs_before`` value msodbcsql expects: a length-prefixed UTF-16-LE token."""
    raw = token.encode("utf-16-le")
    return {SQL_COPT_SS_ACCESS_TOKEN: struct.pack(f"<I{len(raw)}s", len(raw), raw)}


def entra_token_provider(settings: Settings) -> Callable[[], str]:
    """A callable returning a valid Entra token for Azure SQL, asked again before it expires."""
    credential = azure_credential(managed_identity=settings.azure_credential == "managed-identity",
                                  client_id=settings.azure_client_id)
    return EntraToken(credential, AZURE_SQL_TOKEN_SCOPE)


def azure_sql_connect_string(url: Any, driver: str, *, token: bool) -> str:
    """The ODBC connection string for Azure SQL, built here rather than by SQLAlchemy's pyodbc
    dialect: given a URL without a user, the dialect adds ``Trusted_Connection=Yes``, and
    msodbcsql refuses an access token beside ``Trusted_Connection``, ``UID``, ``PWD`` or
    ``Authentication`` ("Cannot use Access Token with any of the following options")."""
    options = {key: str(value) for key, value in url.query.items()}
    if "odbc_connect" in options:
        raise SettingsError("SYNC_DATABASE_URL: odbc_connect is not supported; give the server, the "
                            "database and ODBC options as the URL's parts and query (docs/store.md)")
    options.pop("driver", None)
    lowered = {key.lower(): key for key in options}
    if token:
        clash = sorted(lowered[k] for k in TOKEN_CONFLICTS if k in lowered)
        if clash:
            raise SettingsError(f"SYNC_DATABASE_URL: {', '.join(clash)} cannot go with the app's Entra access "
                                "token; remove it (the URL has no user: the app signs in with its identity)")
    elif url.password is None and "authentication" not in lowered:
        raise SettingsError("SYNC_DATABASE_URL: an Azure SQL URL with a user needs its password "
                            "(mssql+pyodbc://user:password@server/db), or no user for the app's Entra identity")
    parts = {"Driver": "{" + odbc_driver(url, driver).replace("}", "}}") + "}",  # braced, always
             "Server": f"tcp:{url.host},{url.port or 1433}", "Database": url.database or ""}
    if url.username:
        parts.update(UID=url.username, PWD=url.password or "")
    for key, default in CONNECT_DEFAULTS.items():  # Microsoft's recommended values; the URL may override
        if key.lower() not in lowered:
            parts[key] = default
    parts.update(options)
    return ";".join(f"{key}={value if key == 'Driver' else _odbc_value(value)}" for key, value in parts.items())


def odbc_driver(url: Any, default: str) -> str:
    """The ODBC driver's name: the URL's ``driver`` query parameter, else SYNC_ODBC_DRIVER."""
    return str(url.query.get("driver") or default)


def _odbc_value(value: str) -> str:
    """An ODBC attribute value, braced when it holds a character the syntax gives meaning to."""
    if any(c in value for c in ";{}=") or value != value.strip():
        return "{" + value.replace("}", "}}") + "}"
    return value


def transient_connect_error(exc: BaseException) -> int | None:
    """The Azure SQL error number of a failed connect that a retry can cure, else None.
    msodbcsql puts the native number in the message: '... (40613) (SQLDriverConnect)'."""
    numbers = {int(n) for n in re.findall(r"\((\d{4,5})\)", " ".join(str(a) for a in getattr(exc, "args", ())))}
    return min(numbers & TRANSIENT_CONNECT_ERRORS.keys(), default=None)


def connect_with_retry(connect: Callable[[], Any], *, delays: Sequence[float] = CONNECT_RETRY_DELAYS,
                       sleep: Callable[[float], None] = time.sleep) -> Any:
    """``connect()``, tried again after each delay while it fails with a transient Azure SQL error
    (a serverless database resuming from auto-pause answers 40613 for up to a minute or so)."""
    for attempt, delay in enumerate([*delays, None], start=1):
        try:
            return connect()
        except Exception as exc:
            number = transient_connect_error(exc)
            if number is None or delay is None:
                raise
            log.warning("Azure SQL connect attempt %d failed with error %d (%s); trying again in %.0f s",
                        attempt, number, TRANSIENT_CONNECT_ERRORS[number], delay)
            sleep(delay)
    raise AssertionError("unreachable")


def require_odbc_driver(dbapi: Any, driver: str) -> None:
    """Fail at start-up, in one line, when the configured ODBC driver is not installed (instead of
    at the first query, with the driver manager's "Can't open lib")."""
    installed = list(dbapi.drivers())
    if driver not in installed:
        raise SettingsError(f"SYNC_ODBC_DRIVER: the ODBC driver {driver!r} is not installed here; installed ODBC "
                            f"drivers: {', '.join(repr(d) for d in installed) or 'none'} (docs/store.md \"Azure SQL\")")


def _azure_sql_engine(url: Any, settings: Settings, token_provider: Callable[[], str] | None,
                      dbapi: Any = None, sleep: Callable[[float], None] = time.sleep) -> Engine:
    token = not url.username and "authentication" not in {k.lower() for k in url.query}
    connect_string = azure_sql_connect_string(url, settings.odbc_driver, token=token)
    driver = odbc_driver(url, settings.odbc_driver)
    options: dict[str, Any] = {"module": dbapi} if dbapi is not None else {}
    try:
        # pyodbc is imported by the dialect only here, when an Azure SQL engine is actually built.
        engine = create_engine(URL.create("mssql+pyodbc", query={"odbc_connect": connect_string}),
                               pool_pre_ping=True, pool_recycle=1800, fast_executemany=True, **options)
    except ImportError as exc:  # pyodbc loads the driver manager (unixODBC's libodbc.so.2) on import
        raise SettingsError(f"SYNC_DATABASE_URL: Azure SQL needs pyodbc and unixODBC, and pyodbc did not load: "
                            f"{exc} (install unixodbc and Microsoft's {driver!r})") from exc
    require_odbc_driver(engine.dialect.loaded_dbapi, driver)
    provider = (token_provider or entra_token_provider(settings)) if token else None

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        def attempt() -> Any:
            if provider is not None:
                # A fresh token per new physical connection; open connections stay authenticated.
                cparams["attrs_before"] = access_token_attrs(provider())
            return dialect.connect(*cargs, **cparams)

        return connect_with_retry(attempt, sleep=sleep)

    return engine
