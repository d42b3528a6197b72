"""A dead relay host must not keep a source's leadership for hours: the leader's sessions
make the server drop a peer that stopped answering within about half a minute (TCP
keepalives, ``tcp_user_timeout``; MySQL: a short ``wait_timeout``), and connect with libpq's
client-side keepalives. Values the DSN sets are its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from config import Settings
from outbox.source import SqlOutboxSource
from outbox.sources import open_source
from tests.outbox_helpers import init_outbox

_SERVER = ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")


@pytest.fixture
def leading(
    make_settings: Callable[..., Settings], sqlite_database: Callable[[], str]
) -> Iterator[Callable[[str], SqlOutboxSource]]:
    """``leading(url)``: a source of that DSN (its outbox made), leading."""
    opened: list[SqlOutboxSource] = []

    def lead(url: str) -> SqlOutboxSource:
        settings = make_settings(sqlite_database(), {"svc": {"url": url}}).sources["svc"]
        init_outbox(settings)
        source = open_source("svc", settings)
        assert isinstance(source, SqlOutboxSource)
        opened.append(source)
        assert source.try_lead()
        return source

    yield lead
    for source in opened:
        source.close()


def _settings(run: Callable[[str], Any]) -> dict[str, str]:
    return {
        name: str(run(f"SELECT setting FROM pg_settings WHERE name = '{name}'"))
        for name in (*_SERVER, "tcp_user_timeout")
    }


def _leader(source: SqlOutboxSource) -> sa.Connection:
    conn = source._conn
    assert conn is not None
    return conn


def test_the_postgresql_leader_sessions_drop_a_dead_peer_soon(
    pg_database: Callable[[], str], leading: Callable[[str], SqlOutboxSource]
) -> None:
    source = leading(pg_database())
    conn = _leader(source)

    server = _settings(lambda sql: conn.exec_driver_sql(sql).scalar_one())
    conn.rollback()
    listener = source._listener  # type: ignore[attr-defined]
    assert listener is not None
    heard = _settings(lambda sql: listener.execute(sql).fetchone()[0])  # type: ignore[arg-type]
    client = conn.connection.driver_connection.info.get_parameters()  # type: ignore[union-attr]

    wanted = {
        "tcp_keepalives_idle": "10",
        "tcp_keepalives_interval": "5",
        "tcp_keepalives_count": "4",
        "tcp_user_timeout": "30000",
    }
    assert server == wanted  # by default the OS's: idle 7200 s, then 9 probes 75 s apart
    assert heard == wanted
    assert client["keepalives"] == "1"
    assert client["keepalives_idle"] == "10"
    assert client["tcp_user_timeout"] == "30000"


def test_values_the_dsn_sets_are_kept(
    pg_database: Callable[[], str], leading: Callable[[str], SqlOutboxSource]
) -> None:
    options = quote("-c tcp_keepalives_idle=77")
    source = leading(f"{pg_database()}?keepalives_idle=42&options={options}")
    conn = _leader(source)

    server = _settings(lambda sql: conn.exec_driver_sql(sql).scalar_one())
    client = conn.connection.driver_connection.info.get_parameters()  # type: ignore[union-attr]

    assert server["tcp_keepalives_idle"] == "77"
    assert server["tcp_keepalives_count"] == "4"
    assert client["keepalives_idle"] == "42"
    assert client["keepalives_interval"] == "5"


def test_the_mysql_leader_session_ends_soon_once_idle(
    mysql_database: Callable[[], str], leading: Callable[[str], SqlOutboxSource]
) -> None:
    source = leading(mysql_database())
    init = quote("SET SESSION wait_timeout = 500")
    kept = leading(f"{mysql_database()}?init_command={init}")

    def wait_timeout(of: SqlOutboxSource) -> int:
        return int(_leader(of).exec_driver_sql("SELECT @@session.wait_timeout").scalar_one())

    assert wait_timeout(source) == 60  # the server's default: 8 hours
    assert wait_timeout(kept) == 500
