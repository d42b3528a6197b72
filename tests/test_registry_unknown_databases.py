"""A registry row whose DSN cannot be read now (encrypted, the key not given) hides which
database it names. When the event log has events of its tenant, a row the log has none of
may name that database: it waits, as a member of another registry not yet read does, rather
than relay the tenant's outbox under its own name (another tenant's rows in its read
models). Before, the newcomer was the only member naming the database and relayed it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from config.secrets import encrypt, new_key
from outbox.log import EventLog
from tests.cli_helpers import run_cli, with_password
from tests.tenant_fixtures import (
    init_tenant_outbox,
    make_registry,
    pending_rows,
    record_sales,
    registry_sql,
    sales_for,
)
from tests.tenant_helpers import config_for, registries_config

WAITING = (
    "tenant registry 'pos', tenant 'acme2': waits until the DSN of tenant 'acme' (row 1) can "
    "be read: the event log has events of that tenant, and it may name the same database"
)


def test_a_new_row_waits_while_a_relayed_tenants_dsn_cannot_be_read(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry, shared, zeta = (pg_database() for _ in range(4))
    for url in (shared, zeta):
        init_tenant_outbox(url)
    key = new_key()
    make_registry(registry, {"acme": encrypt(with_password(shared, "acme-s3cret"), key)})
    registry_sql(registry, "INSERT INTO tenants VALUES ('zeta', :d, true)", d=zeta)
    config = config_for(tmp_path, store, registry)
    with_key = {"READMODEL_SECRET_KEY": key}
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    record_sales(shared, sales_for(1, 2))
    record_sales(zeta, sales_for(1, 1))
    relayed = run_cli(["relay", "--once", "--config", str(config)], env=with_key)
    assert relayed.exit_code == 0, relayed.output
    log = EventLog(store)
    try:
        assert log.heads().get("pos:acme") == 2

        # The key is not given now; a new row names acme's database in clear.
        registry_sql(registry, "INSERT INTO tenants VALUES ('acme2', :d, true)", d=shared)
        record_sales(shared, [("r0", "2026-11-27", 100, 3)])
        record_sales(zeta, [("r0", "2026-11-27", 100, 2)])
        relayed = run_cli(["relay", "--once", "--config", str(config)])
        assert WAITING in relayed.output, relayed.output
        assert "pos:zeta: relayed 1" in relayed.stdout, relayed.output  # it has events: goes on
        assert not log.heads().get("pos:acme2")  # nothing of acme's outbox under acme2
        assert pending_rows(shared) == 1

        # The key back: acme relays its row, acme2 is refused as naming acme's database.
        relayed = run_cli(["relay", "--once", "--config", str(config)], env=with_key)
        assert "pos:acme: relayed 1" in relayed.stdout, relayed.output
        assert "names the same database and outbox table as tenant 'acme'" in relayed.output
        assert relayed.exit_code == 2  # a configuration conflict, as README says
        assert log.heads().get("pos:acme") == 3 and not log.heads().get("pos:acme2")
        assert "acme-s3cret" not in relayed.output
    finally:
        log.close()


def test_another_registrys_new_row_waits_too(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, pos, shop, shared, kilo = (pg_database() for _ in range(5))
    for url in (shared, kilo):
        init_tenant_outbox(url)
    key = new_key()
    make_registry(pos, {"acme": encrypt(with_password(shared, "acme-s3cret"), key)})
    make_registry(shop, {"kilo": kilo})
    config = registries_config(tmp_path, store, {"pos": pos, "shop": shop})
    with_key = {"READMODEL_SECRET_KEY": key}
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    record_sales(shared, sales_for(1, 2))
    record_sales(kilo, sales_for(1, 1))
    assert run_cli(["relay", "--once", "--config", str(config)], env=with_key).exit_code == 0

    registry_sql(shop, "INSERT INTO tenants VALUES ('acme2', :d, true)", d=shared)
    record_sales(shared, [("r0", "2026-11-27", 100, 3)])
    relayed = run_cli(["relay", "--once", "--config", str(config)])
    waiting = (
        "tenant registry 'shop', tenant 'acme2': waits until the DSN of tenant 'acme' of "
        "tenant registry 'pos' can be read"
    )
    assert waiting in relayed.output, relayed.output
    log = EventLog(store)
    try:
        assert not log.heads().get("shop:acme2")
        assert log.heads().get("shop:kilo") == 1  # it has events: not held
        assert pending_rows(shared) == 1
    finally:
        log.close()
