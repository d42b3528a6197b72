"""A registry or a tenant database that accepts connections but does not answer stops
nothing else: bounded queries, tenants relayed independently."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog

import outbox.tenant_registry
from config import load_settings
from outbox.log import EventLog
from outbox.tenant_registry import TenantRegistry
from outbox.tenant_relays import TenantRelays
from tests.cli_helpers import run_cli
from tests.tenant_fixtures import init_tenant_outbox, make_registry, record_sales, sales_for
from tests.test_tenant_failures import config_for


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
