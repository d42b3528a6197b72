"""Two tenant registries listing one database (one outbox): one member keeps relaying it,
the other is refused naming both registries and the tenants, never a DSN; the other
members go on. The member the event log has relayed most recently keeps it; on a fresh
start, the first by name. Relay processes reading different registries agree."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from outbox.log import EventLog
from outbox.log_rules import switch_rule
from tests.broker_helpers import Processes, wait_until
from tests.cli_helpers import run_cli, with_password
from tests.tenant_fixtures import (
    init_tenant_outbox,
    make_registry,
    pending_rows,
    record_sales,
    registry_sql,
    sales_for,
)
from tests.tenant_helpers import registries_config

SAME = "the same database and outbox table as"


def _heads(store: str) -> dict[str, int]:
    log = EventLog(store)
    try:
        return {s: h for s, h in log.heads().items() if h}
    finally:
        log.close()


def test_on_a_fresh_start_the_first_by_name_keeps_a_database_two_registries_list(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, pos, shop, shared, zeta, kilo = (pg_database() for _ in range(6))
    for url in (shared, zeta, kilo):
        init_tenant_outbox(url)
    make_registry(pos, {"acme": shared, "zeta": zeta})
    make_registry(shop, {"acme2": with_password(shared, "shop-s3cret"), "kilo": kilo})
    config = registries_config(tmp_path, store, {"shop": shop, "pos": pos})
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    record_sales(shared, sales_for(1, 3))
    record_sales(zeta, sales_for(1, 2))
    record_sales(kilo, sales_for(1, 1))

    relayed = run_cli(["relay", "--once", "--config", str(config)])
    assert relayed.exit_code == 2, relayed.output  # a conflict in the configuration
    refusal = (
        f"tenant registry 'shop', tenant 'acme2': {SAME} tenant 'acme' of tenant registry 'pos'"
    )
    assert refusal in relayed.output
    assert "pos:acme: relayed 3" in relayed.stdout
    assert "pos:zeta: relayed 2" in relayed.stdout and "shop:kilo: relayed 1" in relayed.stdout
    assert _heads(store) == {"pos:acme": 3, "pos:zeta": 2, "shop:kilo": 1}
    assert pending_rows(shared) == 0
    assert "shop-s3cret" not in relayed.output

    # A relay of the registry shop alone refuses shop:acme2 all the same.
    record_sales(shared, [("r0", "2026-11-27", 100, 4)])
    alone = run_cli(["relay", "--once", "--source", "shop", "--config", str(config)])
    assert refusal in alone.output and alone.exit_code == 2
    assert "shop:acme: relayed" not in alone.stdout
    assert pending_rows(shared) == 1 and _heads(store)["pos:acme"] == 3

    status = run_cli(["status", "--json", "--config", str(config)])
    sources = {s["source"]: s for s in json.loads(status.stdout)["sources"]}
    assert {"pos:acme", "pos:zeta", "shop:kilo", "shop:acme2"} <= set(sources)
    assert sources["pos:acme"]["error"] is None
    assert refusal in sources["shop:acme2"]["error"]
    assert "shop-s3cret" not in status.output


def test_the_member_already_relaying_keeps_the_database_another_registry_adds(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, pos, shop, shared, zeta = (pg_database() for _ in range(5))
    for url in (shared, zeta):
        init_tenant_outbox(url)
    make_registry(pos, {"zeta": zeta})
    make_registry(shop, {"acme": shared})
    config = registries_config(tmp_path, store, {"pos": pos, "shop": shop})
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    record_sales(shared, sales_for(1, 2))
    assert run_cli(["relay", "--once", "--config", str(config)]).exit_code == 0
    assert _heads(store) == {"shop:acme": 2}

    # pos, first by name, now lists the same database: shop:acme relayed it, and keeps it.
    registry_sql(pos, "INSERT INTO tenants VALUES ('acme', :d, true)", d=shared)
    record_sales(shared, [("r0", "2026-11-27", 100, 3)])
    record_sales(zeta, sales_for(1, 1))
    relayed = run_cli(["relay", "--once", "--source", "pos", "--config", str(config)])
    refusal = (
        f"tenant registry 'pos', tenant 'acme': {SAME} tenant 'acme' of tenant registry 'shop'"
    )
    assert refusal in relayed.output and relayed.exit_code == 2
    assert "pos:zeta: relayed 1" in relayed.stdout
    assert pending_rows(shared) == 1
    relayed = run_cli(["relay", "--once", "--config", str(config)])
    assert "shop:acme: relayed 1" in relayed.stdout and refusal in relayed.output
    assert _heads(store) == {"shop:acme": 3, "pos:zeta": 1}
    for command in (["status", "--json"], ["health", "--json"]):  # they decide alike
        report = run_cli([*command, "--config", str(config)])
        assert refusal in report.stdout, report.output
        assert "tenant registry 'shop', tenant 'acme'" not in report.stdout


def test_two_relay_processes_of_two_registries_relay_a_shared_database_under_one_name(
    pg_database: Callable[[], str], processes: Processes, tmp_path: Path
) -> None:
    store, pos, shop, shared, zeta = (pg_database() for _ in range(5))
    for url in (shared, zeta):
        init_tenant_outbox(url)
    make_registry(pos, {"zeta": zeta})
    make_registry(shop, {"acme": shared})
    config = registries_config(tmp_path, store, {"pos": pos, "shop": shop})
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    processes.start("pos", "relay", "--source", "pos", "--config", str(config))
    processes.start("shop", "relay", "--source", "shop", "--config", str(config))
    record_sales(shared, sales_for(1, 2))
    assert wait_until(lambda: _heads(store).get("shop:acme") == 2, 20), processes.log_tail()

    registry_sql(pos, "INSERT INTO tenants VALUES ('acme', :d, true)", d=shared)
    assert wait_until(lambda: "tenant registry 'pos', tenant 'acme'" in processes.log_tail(), 10)
    record_sales(shared, sales_for(2, 5))
    record_sales(zeta, sales_for(1, 3))
    assert wait_until(lambda: _heads(store) == {"shop:acme": 12, "pos:zeta": 3}, 20), (
        processes.log_tail()
    )
    codes = processes.stop_all()
    assert list(codes.values()) == [0, 0], processes.log_tail()
    assert f"{SAME} tenant 'acme' of tenant registry 'shop'" in processes.log_tail(200)


def _split(tmp_path: Path, store: str, pos: str, shop: str, shared: str) -> dict[str, Path]:
    """Both registries list ``shared`` and each member has relayed it (as relays configured
    with one registry each would have): shop:acme first, pos:acme last."""
    init_tenant_outbox(shared)
    make_registry(pos, {"acme": shared})
    make_registry(shop, {"acme": shared})
    configs = {}
    for name, registries in (("shop", {"shop": shop}), ("pos", {"pos": pos})):
        (tmp_path / name).mkdir()
        configs[name] = registries_config(tmp_path / name, store, registries)
    (tmp_path / "both").mkdir()
    configs["both"] = registries_config(tmp_path / "both", store, {"pos": pos, "shop": shop})
    assert run_cli(["migrate", "--config", str(configs["both"])]).exit_code == 0
    record_sales(shared, sales_for(1, 2))
    assert run_cli(["relay", "--once", "--config", str(configs["shop"])]).exit_code == 0
    record_sales(shared, [("r0", "2026-11-27", 100, 3)])
    assert run_cli(["relay", "--once", "--config", str(configs["pos"])]).exit_code == 0
    assert _heads(store) == {"shop:acme": 2, "pos:acme": 1}
    return configs


def _appended_at(store: str) -> dict[str, object]:
    engine = sa.create_engine(sa.make_url(store).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            return dict(conn.exec_driver_sql("SELECT source, updated_at FROM rm_log_heads").all())
    finally:
        engine.dispose()


def test_switching_a_refused_members_binary_ids_does_not_make_it_the_keeper(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, pos, shop, shared = (pg_database() for _ in range(4))
    configs = _split(tmp_path, store, pos, shop, shared)
    before = _appended_at(store)
    switched = run_cli(
        ["outbox", "binary-ids", "shop:acme", "text", "--config", str(configs["shop"])]
    )
    assert switched.exit_code == 0 and "nothing changed" in switched.output, switched.output
    log = EventLog(store)
    try:  # a switch that changes the rule (and back) appends nothing either
        assert switch_rule(log.engine, "shop:acme", "uuid") == "text"
        assert switch_rule(log.engine, "shop:acme", "text") == "uuid"
    finally:
        log.close()
    assert _appended_at(store) == before

    record_sales(shared, [("r0", "2026-11-28", 100, 4)])
    relayed = run_cli(["relay", "--once", "--config", str(configs["both"])])
    assert "pos:acme: relayed 1" in relayed.stdout, relayed.output
    assert _heads(store) == {"shop:acme": 2, "pos:acme": 2}


def test_a_new_member_waits_while_another_registry_has_not_been_read(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, pos, shop, shared, zeta = (pg_database() for _ in range(5))
    for url in (shared, zeta):
        init_tenant_outbox(url)
    make_registry(pos, {"zeta": zeta})
    make_registry(shop, {"acme": shared})
    config = registries_config(tmp_path, store, {"pos": pos, "shop": shop})
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    record_sales(shared, sales_for(1, 2))
    record_sales(zeta, sales_for(1, 1))
    assert run_cli(["relay", "--once", "--config", str(config)]).exit_code == 0
    assert _heads(store) == {"shop:acme": 2, "pos:zeta": 1}

    # pos adds the database shop:acme relays, while shop's registry cannot be read: pos:acme
    # has no events in the log, so it waits (it might be shop's); pos:zeta goes on.
    registry_sql(pos, "INSERT INTO tenants VALUES ('acme', :d, true)", d=shared)
    registry_sql(shop, "ALTER TABLE tenants RENAME TO tenants_away")
    record_sales(shared, [("r0", "2026-11-27", 100, 3)])
    record_sales(zeta, [("r0", "2026-11-27", 100, 2)])
    relayed = run_cli(["relay", "--once", "--source", "pos", "--config", str(config)])
    waits = "tenant registry 'pos', tenant 'acme': waits until tenant registry 'shop' is read"
    assert waits in relayed.output and relayed.exit_code == 3, relayed.output
    assert "pos:acme: relayed" not in relayed.stdout  # its error line only
    assert "pos:zeta: relayed 1" in relayed.stdout
    assert _heads(store) == {"shop:acme": 2, "pos:zeta": 2}
    assert pending_rows(shared) == 1

    status = run_cli(["status", "--json", "--config", str(config)])
    sources = {s["source"]: s for s in json.loads(status.stdout)["sources"]}
    assert waits in sources["pos:acme"]["error"]
    assert sources["pos:zeta"]["error"] is None
    assert "cannot be read" in sources["shop"]["error"]

    # shop can be read again: shop:acme, which relayed the database, keeps it.
    registry_sql(shop, "ALTER TABLE tenants_away RENAME TO tenants")
    relayed = run_cli(["relay", "--once", "--config", str(config)])
    assert "shop:acme: relayed 1" in relayed.stdout, relayed.output
    assert _heads(store) == {"shop:acme": 3, "pos:zeta": 2}


def test_a_split_history_keeps_the_most_recent_member_and_is_logged_as_an_error(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, pos, shop, shared = (pg_database() for _ in range(4))
    configs = _split(tmp_path, store, pos, shop, shared)
    record_sales(shared, [("r0", "2026-11-28", 100, 4)])
    relayed = run_cli(["relay", "--once", "--config", str(configs["both"])])
    assert "pos:acme: relayed 1" in relayed.stdout, relayed.output
    split = "the event log has events of both pos:acme and shop:acme"
    assert split in relayed.output
    assert "[error" in next(line for line in relayed.output.splitlines() if split in line)
    status = run_cli(["status", "--json", "--config", str(configs["both"])])
    sources = {s["source"]: s for s in json.loads(status.stdout)["sources"]}
    assert split in sources["shop:acme"]["error"]
