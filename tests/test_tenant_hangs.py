"""A registry or a tenant database that accepts connections but does not answer stops
nothing else: bounded queries, tenants relayed independently."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog

import outbox.source
import outbox.tenant_registry
from config import SourceSettings, load_settings
from outbox.log import EventLog
from outbox.sources import open_source
from outbox.tenant_registry import TenantRegistry
from outbox.tenant_relays import TenantRelays
from tests.cli_helpers import run_cli
from tests.tenant_fixtures import (
    init_tenant_outbox,
    make_registry,
    record_sales,
    registry_sql,
    sales_for,
)
from tests.tenant_helpers import config_for


@pytest.fixture
def locked_registry_table() -> Iterator[Callable[[str], None]]:
    """Hold an exclusive lock on a registry's ``tenants`` table until the test ends."""
    holders: list[sa.Connection] = []
    engines: list[sa.Engine] = []

    def lock(url: str) -> None:
        engine = sa.create_engine(url)
        conn = engine.connect()
        conn.exec_driver_sql("LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE")  # in a transaction
        engines.append(engine)
        holders.append(conn)

    yield lock
    for conn in holders:
        conn.rollback()
        conn.close()
    for engine in engines:
        engine.dispose()


def test_a_blocked_registry_query_is_an_unreadable_registry(
    pg_database: Callable[[], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    locked_registry_table: Callable[[str], None],
) -> None:
    monkeypatch.setattr(outbox.tenant_registry, "_QUERY_TIMEOUT", 1.0, raising=False)  # 10 s
    store, registry, acme = pg_database(), pg_database(), pg_database()
    init_tenant_outbox(acme)
    make_registry(registry, {"acme": acme})
    config = config_for(tmp_path, store, registry)
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    settings = load_settings(config)
    log = EventLog(store)
    log.create_tables()
    tenants = TenantRelays(TenantRegistry("pos", settings.tenants["pos"]), log, settings.relay)
    try:
        tenants.refresh()
        assert tenants.members == ["pos:acme"]
        locked_registry_table(registry)
        with structlog.testing.capture_logs() as logs:
            refresh = threading.Thread(target=tenants.refresh, daemon=True)
            refresh.start()
            refresh.join(5)  # blocked, then given up: the members known before run on
            assert not refresh.is_alive(), "the refresh hangs on the locked registry"
        assert tenants.members == ["pos:acme"]
        assert any("unreadable" in e["event"] and "timeout" in e["error"] for e in logs), logs
        record_sales(acme, sales_for(1, 2))
        assert _wait(lambda: log.heads().get("pos:acme") == 2, 10)

        started = time.monotonic()
        relayed = run_cli(["relay", "--once", "--config", str(config)])
        assert relayed.exit_code == 3 and "cannot be read" in relayed.output
        assert time.monotonic() - started < 10
    finally:
        tenants.stop_all()
        tenants.registry.close()
        log.close()


def _wait(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.fixture
def hung_server() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung database server)."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(50)
    accepted: list[socket.socket] = []
    closing = threading.Event()

    def accept() -> None:
        while not closing.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    closing.set()
    server.close()
    for conn in accepted:
        conn.close()


def _in_thread(func: Callable[[], object], seconds: float) -> list[object]:
    """``func()`` run on a thread for at most ``seconds``; [] if it has not returned."""
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(func()), daemon=True)
    thread.start()
    thread.join(seconds)
    return result


def test_a_hung_tenant_database_holds_up_no_other_tenant(
    pg_database: Callable[[], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hung_server: int,
) -> None:
    monkeypatch.setattr(outbox.source, "CONNECT_TIMEOUT", 3, raising=False)  # 10 s
    store, registry, acme, zeta, late = (pg_database() for _ in range(5))
    for url in (acme, zeta, late):
        init_tenant_outbox(url)
    hung = f"postgresql://pos:hung-s3cret@127.0.0.1:{hung_server}/pos_hung"
    make_registry(registry, {"acme": acme, "hung": hung, "zeta": zeta})
    config = config_for(tmp_path, store, registry)
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    settings = load_settings(config)
    for url in (acme, zeta, late):
        record_sales(url, sales_for(1, 2))
    log = EventLog(store)
    log.create_tables()

    # relay --once: every other tenant drained; the hung one given up on, named.
    once = TenantRelays(TenantRegistry("pos", settings.tenants["pos"]), log, settings.relay)
    started = time.monotonic()
    drained = _in_thread(once.drain, 20)
    assert drained, "relay --once hangs on the tenant database that does not answer"
    results = drained[0]
    assert isinstance(results, dict)
    assert results["pos:acme"].relayed == 2 and results["pos:zeta"].relayed == 2
    assert results["pos:hung"].errors and "hung-s3cret" not in str(results["pos:hung"].errors)
    assert time.monotonic() - started < 10  # one connect timeout, not one per tenant

    # A running relay: the hung tenant removed and a new one added meanwhile; the refresh
    # does not wait for the hung tenant's relay to stop.
    monkeypatch.setattr(outbox.source, "CONNECT_TIMEOUT", 30, raising=False)
    tenants = TenantRelays(TenantRegistry("pos", settings.tenants["pos"]), log, settings.relay)
    try:
        tenants.refresh()
        time.sleep(0.5)  # the hung tenant's relay is connecting
        registry_sql(registry, "DELETE FROM tenants WHERE tenant_id = 'hung'")
        registry_sql(registry, "INSERT INTO tenants VALUES ('late', :d, true)", d=late)
        started = time.monotonic()
        assert _in_thread(lambda: tenants.refresh() or True, 10), "the refresh waits on hung"
        assert time.monotonic() - started < 5
        assert tenants.members == ["pos:acme", "pos:late", "pos:zeta"]
        assert _wait(lambda: log.heads().get("pos:late") == 2, 10)
    finally:
        tenants.stop_all()
        tenants.registry.close()
        log.close()


@pytest.mark.parametrize(
    ("databases", "query", "expected"),
    [
        ("pg_database", "SHOW statement_timeout", "1min"),
        ("mysql_database", "SELECT @@SESSION.max_statement_time", 60),  # MariaDB
    ],
)
def test_a_leaders_statements_are_bounded(
    request: pytest.FixtureRequest, databases: str, query: str, expected: object
) -> None:
    url = request.getfixturevalue(databases)()
    init_tenant_outbox(url)
    source = open_source("pos:acme", SourceSettings(url=url, tenant="acme", columns={"tenant": ""}))
    try:
        assert source.try_lead()
        leader = source._conn
        assert leader is not None
        value = leader.exec_driver_sql(query).scalar()
        assert value == expected or float(value) == expected
    finally:
        source.close()
