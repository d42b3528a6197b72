"""``readmodel outbox init`` for a tenant registry with two rows naming one database keeps
the row the relay keeps (the one the event log has events of) and refuses the other; when
the event log cannot be read it refuses both, saying why and how to resolve it. A refused
row is a configuration conflict: exit 2 (3 stays for an unreachable tenant database)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.cli_helpers import run_cli, with_password
from tests.tenant_fixtures import (
    init_tenant_outbox,
    make_registry,
    record_sales,
    registry_sql,
    sales_for,
)
from tests.tenant_helpers import config_for

KEPT = (
    "tenant registry 'pos', tenant 'acme2': row 2 names the same database and outbox table as "
    "tenant 'acme' (row 1), which relays it: not relayed"
)


def _init(config: Path) -> tuple[int, str, str]:
    made = run_cli(["outbox", "init", "--source", "pos", "--config", str(config)])
    return made.exit_code, made.stdout, made.output


def test_init_keeps_the_row_the_relay_keeps_and_refuses_the_other(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry, shared, zeta = (pg_database() for _ in range(4))
    init_tenant_outbox(zeta)
    make_registry(registry, {"acme": shared, "zeta": zeta})
    config = config_for(tmp_path, store, registry)
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    code, stdout, _ = _init(config)
    assert code == 0 and "pos:acme: outbox table 'outbox' is ready" in stdout
    record_sales(shared, sales_for(1, 2))
    relayed = run_cli(["relay", "--once", "--config", str(config)])
    assert relayed.exit_code == 0 and "pos:acme: relayed 2" in relayed.stdout

    # A second row naming acme's database (spelled otherwise): the relay keeps acme.
    other = with_password(shared, "acme2-s3cret").replace("127.0.0.1", "localhost")
    registry_sql(registry, "INSERT INTO tenants VALUES ('acme2', :d, true)", d=other)
    relayed = run_cli(["relay", "--once", "--config", str(config)])
    assert KEPT in relayed.output

    code, stdout, output = _init(config)
    assert KEPT in output
    assert "pos:acme: outbox table 'outbox' is ready" in stdout
    assert "pos:zeta: outbox table 'outbox' is ready" in stdout
    assert "pos:acme2" not in stdout
    assert code == 2, output
    assert "acme2-s3cret" not in output


def test_init_refuses_both_rows_when_the_event_log_cannot_be_read(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    registry, shared, zeta = (pg_database() for _ in range(3))
    store = "postgresql://postgres@127.0.0.1:1/readmodel"  # nothing listens there
    init_tenant_outbox(zeta)
    make_registry(
        registry,
        {"acme": shared, "acme2": shared.replace("127.0.0.1", "localhost"), "zeta": zeta},
    )
    code, stdout, output = _init(config_for(tmp_path, store, registry))
    same = "the same database and outbox table as"
    assert f"tenant 'acme': {same} tenant 'acme2': not relayed" in output
    assert f"tenant 'acme2': {same} tenant 'acme': not relayed" in output
    assert "the event log cannot be read" in output
    assert "both are refused" in output and "readmodel migrate" in output
    assert "pos:zeta: outbox table 'outbox' is ready" in stdout
    assert "pos:acme:" not in stdout and "pos:acme2:" not in stdout
    assert code == 2, output


def test_init_of_one_refused_row_is_a_conflict_not_a_missing_row(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry, shared = (pg_database() for _ in range(3))
    make_registry(registry, {"acme": shared, "acme2": shared.replace("127.0.0.1", "localhost")})
    config = config_for(tmp_path, store, registry)
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    made = run_cli(["outbox", "init", "--source", "pos:acme2", "--config", str(config)])
    same = "the same database and outbox table as"
    assert f"tenant 'acme2': {same} tenant 'acme': not relayed" in made.output
    assert "lists no" not in made.output
    assert made.exit_code == 2, made.output
