"""Shared fixtures: every test gets its own databases on the real local servers, dropped after."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from config import Settings, load_settings

pytest_plugins = [
    "tests.binary_ids_helpers",
    "tests.broker_helpers",
    "tests.cache_helpers",
    "tests.document_bank_helpers",
    "tests.mongo_helpers",
    "tests.operator_skip_helpers",
    "tests.replay_helpers",
    "tests.shop_helpers",
]

PG_ADMIN = os.environ.get("READMODEL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MYSQL_ADMIN = os.environ.get("READMODEL_TEST_MYSQL", "mysql://root@127.0.0.1:3306/mysql")

ENGINES = ("postgresql", "mysql", "sqlite")


def _admin_engine(dsn: str) -> sa.Engine:
    from outbox.db import sqlalchemy_url

    return sa.create_engine(
        sqlalchemy_url(dsn), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
    )


def _databases(admin_dsn: str, create: str, drop: str) -> Iterator[Callable[[], str]]:
    """Factory of fresh databases on one server (``create``/``drop`` take ``{name}``);
    every database it made is dropped afterwards."""
    admin = _admin_engine(admin_dsn)
    created: list[str] = []

    def make() -> str:
        name = f"rm_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(create.format(name=name))
        created.append(name)
        return sa.make_url(admin_dsn).set(database=name).render_as_string(hide_password=False)

    yield make
    with admin.connect() as conn:
        for name in created:
            conn.exec_driver_sql(drop.format(name=name))
    admin.dispose()


@pytest.fixture
def pg_database() -> Iterator[Callable[[], str]]:
    """Factory: a fresh PostgreSQL database per call; returns its DSN. All are dropped after."""
    yield from _databases(
        PG_ADMIN, 'CREATE DATABASE "{name}"', 'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    )


def allow_connections(url: str, allow: bool) -> None:
    """Let a test's own PostgreSQL database be connected to, or not (its sessions ended):
    to its clients, the database is unreachable until allowed again."""
    name = sa.make_url(url).database
    admin = _admin_engine(PG_ADMIN)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')
            if not allow:
                conn.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )
    finally:
        admin.dispose()


@pytest.fixture
def mysql_database() -> Iterator[Callable[[], str]]:
    """Factory: a fresh MariaDB/MySQL database per call; returns its DSN. All are dropped after."""
    yield from _databases(
        MYSQL_ADMIN,
        "CREATE DATABASE `{name}` CHARACTER SET utf8mb4",
        "DROP DATABASE IF EXISTS `{name}`",
    )


@pytest.fixture
def sqlite_database(tmp_path: Any) -> Callable[[], str]:
    """Factory: a fresh SQLite database file per call; returns its DSN."""
    counter = iter(range(1_000_000))

    def make() -> str:
        return f"sqlite:///{tmp_path / f'db{next(counter)}.sqlite'}"

    return make


@pytest.fixture
def database_for(
    pg_database: Callable[[], str],
    mysql_database: Callable[[], str],
    sqlite_database: Callable[[], str],
) -> Callable[[str], str]:
    """``database_for("postgresql" | "mysql" | "sqlite")`` -> a fresh database DSN."""
    factories = {"postgresql": pg_database, "mysql": mysql_database, "sqlite": sqlite_database}
    return lambda engine: factories[engine]()


@pytest.fixture(params=["postgresql", "sqlite"])
def store_url(request: pytest.FixtureRequest, database_for: Callable[[str], str]) -> str:
    """A fresh read store's DSN: the test runs once on PostgreSQL, once on SQLite."""
    return database_for(request.param)


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """``make_settings(store_url, sources={...}, **other)`` -> validated :class:`Settings`."""

    def make(
        store_url: str, sources: dict[str, dict[str, Any]] | None = None, **other: Any
    ) -> Settings:
        return load_settings(None, store={"url": store_url}, sources=sources or {}, **other)

    return make


@pytest.fixture(autouse=True)
def _no_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("READMODEL_") and not name.startswith("READMODEL_TEST_"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener accepts every connection and never says a word (a hung
    server: the connections complete, no answer comes)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield int(server.getsockname()[1])
    server.close()
    for conn in accepted:
        conn.close()
