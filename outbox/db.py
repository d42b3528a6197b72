"""Engines and DSNs: one place that knows which driver each engine uses and how to hide secrets."""

from __future__ import annotations

import re
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

EngineKind = Literal["postgresql", "mysql", "sqlite"]

_DRIVERS: dict[str, tuple[EngineKind, str]] = {
    "postgresql": ("postgresql", "postgresql+psycopg"),
    "postgres": ("postgresql", "postgresql+psycopg"),
    "mysql": ("mysql", "mysql+pymysql"),
    "mariadb": ("mysql", "mariadb+pymysql"),
    "sqlite": ("sqlite", "sqlite"),
}
_DSN_SECRET = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")
_KV_SECRET = re.compile(r"(password\s*=\s*)(\S+)", re.IGNORECASE)


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
    return url


def libpq_conninfo(dsn: str | URL) -> str:
    """A DSN that psycopg accepts directly (for LISTEN connections)."""
    url = sqlalchemy_url(dsn).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def redact_dsn(dsn: str | URL) -> str:
    """The DSN with its password masked, for logs and messages."""
    try:
        return make_url(dsn).render_as_string(hide_password=True)
    except Exception:
        return redact_text(str(dsn))


def redact_text(text: str) -> str:
    """Mask anything that looks like a DSN password or ``password=...`` inside free text."""
    text = _DSN_SECRET.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _KV_SECRET.sub(r"\1***", text)


def describe_db_error(exc: BaseException) -> str:
    """One line for a driver error, without SQL text, parameters or secrets."""
    orig = getattr(exc, "orig", None) or exc
    message = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return redact_text(f"{type(orig).__name__}: {message}")


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_engine(dsn: str | URL, **kwargs: Any) -> Engine:
    """An engine with readmodel's defaults: pre-ping, orjson, and sane SQLite locking.

    SQLite connections run in WAL mode with a busy timeout; transactions started
    with ``execution_options(sqlite_begin="IMMEDIATE")`` take the write lock at
    ``BEGIN`` so that read-then-write transactions never fail to upgrade.
    """
    url = sqlalchemy_url(dsn)
    kind = engine_kind(url)
    options: dict[str, Any] = {
        "json_serializer": _json_dumps,
        "json_deserializer": orjson.loads,
    }
    if kind == "sqlite":
        options["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        options["pool_pre_ping"] = True
        options["pool_size"] = kwargs.pop("pool_size", 10)
        options["max_overflow"] = kwargs.pop("max_overflow", 20)
    options.update(kwargs)
    engine = sa.create_engine(url, **options)
    if kind == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {'IMMEDIATE' if mode == 'IMMEDIATE' else 'DEFERRED'}")
