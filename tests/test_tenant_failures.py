"""A tenant database that cannot be opened is that tenant's error: named once, without its
DSN; the other tenants are relayed; one-shot commands exit 3 naming it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import structlog

from config import load_settings
from outbox.log import EventLog
from outbox.tenant_registry import TenantRegistry
from outbox.tenant_relays import TenantRelays
from tests.broker_helpers import wait_until
from tests.cli_helpers import run_cli
from tests.tenant_fixtures import (
    init_tenant_outbox,
    make_registry,
    pending_rows,
    record_sales,
    sales_for,
)
from tests.tenant_helpers import config_for

SECRET = "Hunter2Secret"
NO_DRIVER = f"postgresql+psycopg2://bob:{SECRET}@127.0.0.1:5432/rm_f2_bob"  # not installed
BAD_OPTION = f"mysql://root:{SECRET}@127.0.0.1:3306/rm_f2_carl?connect_timeout=abc"
# Read, but fails every connection (an unknown option is refused as the row's DSN).
BAD_ON_CONNECT = f"mysql://root:{SECRET}@127.0.0.1:3306/rm_f2_dora?ssl_ca=/nonexistent/ca.pem"


def test_a_dsn_that_cannot_be_opened_is_its_tenants_error_and_the_others_go_on(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry, acme, zeta = (pg_database() for _ in range(4))
    for url in (acme, zeta):
        init_tenant_outbox(url)
    make_registry(registry, {"acme": acme, "bob": NO_DRIVER, "carl": BAD_OPTION, "zeta": zeta})
    config = config_for(tmp_path, store, registry)
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    outputs = []

    made = run_cli(["outbox", "init", "--source", "pos", "--config", str(config)])
    outputs.append(made.output)
    assert "pos:acme: outbox table 'outbox' is ready" in made.stdout
    assert "pos:zeta: outbox table 'outbox' is ready" in made.stdout
    assert "'pos:bob'" in made.output
    assert "tenant 'carl': DSN refused: a query option of the DSN (connect_timeout)" in made.output
    assert made.exit_code == 3

    record_sales(acme, sales_for(1, 2))
    record_sales(zeta, sales_for(1, 3))
    relayed = run_cli(["relay", "--once", "--config", str(config)])
    outputs.append(relayed.output)
    assert "pos:acme: relayed 2" in relayed.stdout and "pos:zeta: relayed 3" in relayed.stdout
    assert "'pos:bob'" in relayed.output and "psycopg2" in relayed.output
    assert "tenant 'carl': DSN refused" in relayed.output
    assert relayed.exit_code == 3
    assert pending_rows(acme) == 0 and pending_rows(zeta) == 0

    record_sales(zeta, sales_for(1, 1))
    caught_up = run_cli(["run", "--until-caught-up", "--config", str(config)])
    outputs.append(caught_up.output)
    assert caught_up.exit_code == 3 and "'pos:bob'" in caught_up.output
    assert pending_rows(zeta) == 0

    status = run_cli(["status", "--config", str(config)])
    outputs.append(status.output)
    assert "pos:bob" in status.output and "pos:zeta" in status.output
    assert all(SECRET not in text for text in outputs)


def test_a_running_registry_relays_the_others_and_names_a_broken_tenant_once(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry, acme, zeta = (pg_database() for _ in range(4))
    for url in (acme, zeta):
        init_tenant_outbox(url)
    make_registry(
        registry,
        {"acme": acme, "bob": NO_DRIVER, "carl": BAD_OPTION, "dora": BAD_ON_CONNECT, "zeta": zeta},
    )
    settings = load_settings(config_for(tmp_path, store, registry))
    log = EventLog(store)
    log.create_tables()
    tenants = TenantRelays(TenantRegistry("pos", settings.tenants["pos"]), log, settings.relay)
    try:
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                tenants.refresh()
            record_sales(zeta, sales_for(1, 2))
            assert wait_until(lambda: log.heads().get("pos:zeta") == 2, 10)
            time.sleep(1.0)  # dora's relay has failed to connect a few times by now
            assert tenants.members == ["pos:acme", "pos:dora", "pos:zeta"]
            assert tenants._members["pos:dora"].thread.is_alive()  # reports, retries
    finally:
        tenants.stop_all()
        tenants.registry.close()
        log.close()
    bob = [e for e in logs if e.get("source") == "pos:bob"]
    assert len(bob) == 1 and "psycopg2" in bob[0]["error"]  # once, not every refresh
    carl = [e for e in logs if "tenant 'carl'" in str(e)]
    assert len(carl) == 1 and "connect_timeout" in str(carl[0])
    dora = [e for e in logs if e.get("source") == "pos:dora" and "error" in e]
    assert dora and "FileNotFoundError" in dora[0]["error"]
    assert SECRET not in repr(logs)
