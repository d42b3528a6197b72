"""Engines and DSNs: one place that knows which driver each engine uses and how to hide secrets."""

from __future__ import annotations

import re
import select
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, Engine, make_url

from outbox.db_errors import hidden_message
from outbox.json_numbers import dumps_exact, loads_exact
from outbox.sqlite_whole_numbers import exact_whole_numbers

EngineKind = Literal["postgresql", "mysql", "sqlite"]

_DRIVERS: dict[str, tuple[EngineKind, str]] = {
    "postgresql": ("postgresql", "postgresql+psycopg"),
    "postgres": ("postgresql", "postgresql+psycopg"),
    "mysql": ("mysql", "mysql+pymysql"),
    "mariadb": ("mysql", "mariadb+pymysql"),
    "sqlite": ("sqlite", "sqlite"),
}
# The password runs to the last "@" of its word: an unescaped "@" in it must not leak the rest.
_DSN_SECRET = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>\S*)@")
# A masked DSN's scheme and what follows its user part ("user@", "user:***@"), to the query.
_DSN_LOCATION = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?:[^/@\s]*@)?(?P<where>[^?#\s]*)")
# The query parameters that say where a DSN points (libpq's, PyMySQL's), kept in a location.
_LOCATION_PARAMETERS = frozenset({"host", "hostaddr", "port", "dbname", "database", "unix_socket"})
_EMBEDDED_SETTING = re.compile(r"=|%3d|://|%3a%2f%2f", re.IGNORECASE)
# A user name a server quotes in refusing a connection: PostgreSQL's 'role "X" does not
# exist', 'password authentication failed for user "X"', 'no pg_hba.conf entry for host
# "h", user "X", ...'; MySQL's "Access denied for user 'X'@'h'", "User 'X' has exceeded".
_USER_NAME = re.compile(r"""\b(?P<word>user|role)(?P<space>\s+)(?P<q>["']).*?(?P=q)""", re.I)
USER_HIDDEN = "(name hidden)"
# password=... in free text, a libpq conninfo, or a DSN's query (?password=, &sslpassword=).
_KV_SECRET = re.compile(r"\b((?:ssl)?password|passwd|pwd)(\s*=\s*)([^\s&;]+)", re.IGNORECASE)


def engine_kind(dsn: str | URL) -> EngineKind:
    """``postgresql``, ``mysql`` (MySQL and MariaDB) or ``sqlite``."""
    backend = make_url(dsn).get_backend_name()
    try:
        return _DRIVERS[backend][0]
    except KeyError:
        raise ValueError(f"unsupported database engine {backend!r}") from None


def sqlalchemy_url(dsn: str | URL) -> URL:
    """The DSN with readmodel's driver filled in when the user left it out."""
    url = make_url(dsn)
    if "+" not in url.drivername:
        url = url.set(drivername=_DRIVERS[url.get_backend_name()][1])
    elif url.get_backend_name() == "postgres":  # SQLAlchemy knows only "postgresql"
        url = url.set(drivername=f"postgresql+{url.get_driver_name()}")
    return url


def libpq_conninfo(dsn: str | URL) -> str:
    """A DSN that psycopg accepts directly (for LISTEN connections)."""
    url = sqlalchemy_url(dsn).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def redact_dsn(dsn: str | URL, *, location: bool = False) -> str:
    """The DSN with its password masked, for logs and messages: in the user part (however
    it is escaped) and in the query (``?password=...``). ``location``: only where it
    points, ``postgresql://host:port/dbname``, without user, password or the query's other
    parameters (``host``, ``port``, ``dbname``... stay), for the logs of tenant registries
    and their members."""
    if isinstance(dsn, URL):
        dsn = dsn.render_as_string(hide_password=False)
    text = redact_text(dsn)
    if location and (found := _DSN_LOCATION.match(text)):
        query = text[found.end() :].partition("#")[0].removeprefix("?")
        kept = [
            part
            for part in query.split("&")
            if part.partition("=")[0].lower() in _LOCATION_PARAMETERS
            and not _EMBEDDED_SETTING.search(part.partition("=")[2])  # libpq expands it
        ]
        return found["scheme"] + found["where"] + ("?" + "&".join(kept) if kept else "")
    return text


def engine_location(engine: Engine) -> str:
    """Where ``engine``'s database is, as readmodel logs it: no driver, user, password or
    DSN query (``postgresql://host:port/db``)."""
    url = engine.url
    return redact_dsn(url.set(drivername=url.get_backend_name()), location=True)


def redact_text(text: str) -> str:
    """Mask anything that looks like a DSN password or ``password=...`` inside free text,
    and the user name a database server quotes in refusing a connection (a tenant's
    database is named by where it is only, see README "Configuration")."""
    text = _DSN_SECRET.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _USER_NAME.sub(rf"\g<word>\g<space>\g<q>{USER_HIDDEN}\g<q>", text)
    return _KV_SECRET.sub(r"\1\2***", text)


def describe_db_error(exc: BaseException) -> str:
    """One line for a driver error, without SQL text, parameters, secrets, nor the values
    the database quotes in refusing them (:func:`outbox.db_errors.hidden_message`)."""
    orig = getattr(exc, "orig", None) or exc
    message = hidden_message(orig) or type(orig).__name__
    return redact_text(f"{type(orig).__name__}: {message}")


def _json_dumps(value: Any) -> str:
    # Keys as the json module writes them: a row's column names are str subclasses.
    return dumps_exact(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _json_loads(value: Any) -> Any:
    """SQLite gives a JSON column NUMERIC affinity: a number's JSON text is stored, and read
    back, as the number itself."""
    if type(value) is int or type(value) is float:
        return value
    return loads_exact(value)


def create_engine(dsn: str | URL, **kwargs: Any) -> Engine:
    """An engine with readmodel's defaults: a ping for idle connections, orjson, and sane
    SQLite locking.

    SQLite connections run in WAL mode with a busy timeout; transactions started
    with ``execution_options(sqlite_begin="IMMEDIATE")`` take the write lock at
    ``BEGIN`` so that read-then-write transactions never fail to upgrade.
    """
    url = sqlalchemy_url(dsn)
    kind = engine_kind(url)
    options: dict[str, Any] = {
        "json_serializer": _json_dumps,
        "json_deserializer": _json_loads,
    }
    if kind == "sqlite":
        options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT, "check_same_thread": False}
    else:
        options["pool_size"] = kwargs.pop("pool_size", 10)
        options["max_overflow"] = kwargs.pop("max_overflow", 20)
        options["connect_args"] = {**_bounded_connect(url), **kwargs.pop("connect_args", {})}
    options.update(kwargs)
    engine = sa.create_engine(url, **options)
    if kind == "sqlite":
        _configure_sqlite(engine)
    else:
        _ping_when_idle(engine, IDLE_BEFORE_PING)
    if kind == "mysql":
        _utc_sessions(engine)
        if options["connect_args"].get("read_timeout") is _HANDSHAKE:
            _unbounded_after_handshake(engine)
    return engine


CONNECT_TIMEOUT = 10
"""Seconds a connect waits for a server that takes the connection and never answers (a
hung proxy in between), unless the DSN sets its own ``connect_timeout``."""


class _Handshake(float):
    """The read timeout of a MySQL connect's handshake, told apart from one a caller set."""


_HANDSHAKE = _Handshake(CONNECT_TIMEOUT)


def _bounded_connect(url: URL) -> dict[str, Any]:
    """Connect arguments bounding a connect by :data:`CONNECT_TIMEOUT`, those the DSN sets
    left to it. libpq's ``connect_timeout`` bounds the whole connect; PyMySQL's only the
    TCP connect, its handshake (the server's greeting) waits on ``read_timeout``, which
    :func:`_unbounded_after_handshake` lifts once connected."""
    bounds: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT}
    if engine_kind(url) == "mysql" and url.get_driver_name() == "pymysql":
        bounds["read_timeout"] = _HANDSHAKE
    return {key: value for key, value in bounds.items() if key not in url.query}


def _unbounded_after_handshake(engine: Engine) -> None:
    """Queries on a connected MySQL connection wait as long as they take, as without the
    handshake's bound (the server's own statement timeouts bound them)."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection._read_timeout = None  # PyMySQL sets it on its socket at next read
        sock = getattr(dbapi_connection, "_sock", None)
        if sock is not None:
            sock.settimeout(None)
            dbapi_connection._current_timeout = None


def _utc_sessions(engine: Engine) -> None:
    """MySQL returns ``TIMESTAMP`` values in the session's time zone (the server's default
    unless set): every session of ours reads them in UTC, as naive times are taken."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET time_zone = '+00:00'")


IDLE_BEFORE_PING = 1.0
"""Seconds a pooled connection may rest before its next checkout pings it."""


def _ping_when_idle(engine: Engine, idle: float) -> None:
    """Ping a connection at checkout only when it may be dead.

    SQLAlchemy's ``pool_pre_ping`` pings at every checkout: a round trip added to each
    short transaction of the relay and the workers. Here a connection is pinged when it
    rested longer than ``idle`` seconds, or when its socket has something to read while
    it sits idle in the pool (a server that terminates a connection or shuts down says so
    and closes the socket). A connection used moments ago with a quiet socket is taken as
    it is; one found dead is replaced before anyone sees it.
    """
    dialect = engine.dialect

    @sa.event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["rm_checked_in"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        rested = record.info.get("rm_checked_in")
        if rested is None:  # just connected
            return
        if time.monotonic() - rested < idle and not _socket_readable(dbapi_connection):
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise sa.exc.DisconnectionError(f"stale pooled connection: {exc}") from exc


def _socket_readable(dbapi_connection: Any) -> bool:
    """Whether an idle connection's socket has data or EOF waiting (``True`` when unknown)."""
    try:
        fileno = dbapi_connection.fileno()  # psycopg
    except AttributeError:
        sock = getattr(dbapi_connection, "_sock", None)  # PyMySQL
        if sock is None:
            return True
        fileno = sock.fileno()
    except Exception:
        return True
    if fileno < 0:
        return True
    try:
        readable, _, _ = select.select([fileno], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class _SqliteAwareDateTime(sqlite.DATETIME):
    """SQLite keeps a ``DateTime(timezone=True)`` value as text without its offset: written
    in UTC and read back as UTC, it stays the same instant, aware as on PostgreSQL."""

    def bind_processor(self, dialect: Any) -> Any:
        process = super().bind_processor(dialect)
        if not self.timezone:
            return process

        def to_utc(value: Any) -> Any:
            if isinstance(value, datetime) and value.tzinfo is not None:
                value = value.astimezone(UTC).replace(tzinfo=None)
            return process(value) if process else value

        return to_utc

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        process = super().result_processor(dialect, coltype)
        if not self.timezone:
            return process

        def as_utc(value: Any) -> Any:
            value = process(value) if process else value
            if isinstance(value, datetime) and value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            return value

        return as_utc


SQLITE_BUSY_TIMEOUT = 30.0
"""Seconds a SQLite connection waits for another one's lock before "database is locked"."""


def _configure_sqlite(engine: Engine) -> None:
    engine.dialect.colspecs = {**engine.dialect.colspecs, sa.DateTime: _SqliteAwareDateTime}
    exact_whole_numbers(engine)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {'IMMEDIATE' if mode == 'IMMEDIATE' else 'DEFERRED'}")


def _switch_to_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode=WAL``, waiting up to the busy timeout for another connection.

    A file still in rollback-journal mode (a new one) is switched by writing its header:
    the pragma takes the read lock, then the write lock. SQLite does not wait for the
    write lock of a statement that holds the read lock (waiting could deadlock), so when
    another connection holds the write lock - two processes opening a new file at once,
    both switching it - the pragma fails at once with "database is locked", whatever the
    busy timeout. The failed statement gives its read lock back, the other connection
    finishes, and asked again the pragma finds the file in WAL mode already.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT
    pause = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if not _sqlite_busy(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _sqlite_busy(exc: sqlite3.OperationalError) -> bool:
    # SQLITE_BUSY and its extended codes (SQLITE_BUSY_RECOVERY, ...) share the low byte.
    return exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
