"""Tenant registries: the member sources of a group read from a master ``tenants`` table,
started and released while readmodel runs; bad rows reported by tenant, never by DSN."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from config import ConfigError, load_settings
from config.secrets import encrypt, new_key
from outbox.db import create_engine
from outbox.log import EventLog
from outbox.tenant_registry import TenantRegistry
from outbox.tenant_relays import TenantRelays
from tests.broker_helpers import Processes, wait_until
from tests.cli_helpers import run_cli, with_password, write_config
from tests.tenant_fixtures import (
    init_tenant_outbox,
    make_registry,
    model,
    out_of_order,
    pending_rows,
    record_sales,
    registry_sql,
    sales_for,
)
from tests.tenant_helpers import config_for

DAY = "2026-11-26"


def _model(store: str) -> dict[str, tuple[int, int]]:
    engine = create_engine(store)
    try:
        return model(engine)
    except sa.exc.ProgrammingError:  # the projection's tables are not made yet
        return {}
    finally:
        engine.dispose()


def test_tenants_added_and_removed_while_readmodel_runs(
    pg_database: Callable[[], str], processes: Processes, tmp_path: Path
) -> None:
    store, registry = pg_database(), pg_database()
    acme, globex, initech = pg_database(), pg_database(), pg_database()
    for url in (acme, globex, initech):
        init_tenant_outbox(url)
    key = new_key()
    initech_dsn = encrypt(with_password(initech, "initech-s3cret"), key)
    make_registry(
        registry,
        {
            "acme": acme,
            "globex": globex,
            None: acme,  # no tenant id
            "badco": "fernet:not-a-token",  # undecryptable
            "deadco": "postgresql://pos:deadco-s3cret@127.0.0.1:1/pos_deadco",  # unreachable
        },
    )
    config = config_for(tmp_path, store, registry)
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    record_sales(acme, sales_for(2, 3))  # 6 sales, 900 cents
    record_sales(globex, sales_for(1, 4))  # 4 sales, 400 cents
    started = time.monotonic()
    processes.start("run", "run", "--config", str(config), env={"READMODEL_SECRET_KEY": key})

    def log() -> str:
        return "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("run-*.log"))

    expected = {"acme": (6, 900), "globex": (4, 400)}
    assert wait_until(lambda: _model(store) == expected, 30), processes.log_tail()

    # A new tenant, its DSN encrypted: relayed and projected without a restart.
    record_sales(initech, sales_for(1, 2))
    registry_sql(registry, "INSERT INTO tenants VALUES ('initech', :d, true)", d=initech_dsn)
    expected["initech"] = (2, 200)
    assert wait_until(lambda: _model(store) == expected, 20), processes.log_tail()

    # A removed tenant is released and relayed no more; the others go on.
    registry_sql(registry, "UPDATE tenants SET active = false WHERE tenant_id = 'globex'")
    assert wait_until(lambda: "stopped relaying tenant source" in log(), 10), log()
    record_sales(globex, [("r0", DAY, 100, 5)])
    record_sales(acme, [("r0", DAY, 100, 4)])
    expected["acme"] = (7, 1000)
    assert wait_until(lambda: _model(store) == expected, 20), processes.log_tail()
    time.sleep(1.0)  # five refreshes and many polls: the removed tenant's row stays put
    assert pending_rows(globex) == 1 and _model(store) == expected

    codes = processes.stop_all()
    assert list(codes.values()) == [0], processes.log_tail()
    engine = create_engine(store)
    try:
        assert out_of_order(engine) == 0
    finally:
        engine.dispose()
    text = log()
    assert "pos:initech" in text and "pos:deadco" in text  # relayed; unreachable, retried
    assert "'badco'" in text and "cannot decrypt" in text and "no tenant id" in text
    for secret in ("initech-s3cret", "deadco-s3cret", initech_dsn.removeprefix("fernet:")):
        assert secret not in text
    assert time.monotonic() - started < 60


def test_relay_once_status_and_health_name_members_and_bad_rows(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry, acme = pg_database(), pg_database(), pg_database()
    key = new_key()
    acme_dsn = encrypt(with_password(acme, "acme-s3cret"), key)
    make_registry(
        registry,
        {
            "acme": acme_dsn,
            "badco": "http://badco:badco-s3cret@host/db",
            "deadco": "postgresql://pos:deadco-s3cret@127.0.0.1:1/pos_deadco",
        },
    )
    config = config_for(tmp_path, store, registry)
    env = {"READMODEL_SECRET_KEY": key}
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    outputs = []

    made = run_cli(["outbox", "init", "--source", "pos", "--config", str(config)], env=env)
    outputs.append(made.output)
    assert "pos:acme: outbox table 'outbox' is ready" in made.stdout
    assert "tenant 'badco'" in made.output and "source 'pos:deadco'" in made.output
    assert made.exit_code == 3  # one tenant database unreachable, the others done
    record_sales(acme, sales_for(1, 3))
    missing = run_cli(["outbox", "init", "-s", "pos:nope", "--config", str(config)], env=env)
    assert missing.exit_code == 2 and "lists no 'pos:nope'" in missing.output

    relayed = run_cli(["relay", "--once", "--config", str(config)], env=env)
    outputs.append(relayed.output)
    assert "pos:acme: relayed 3" in relayed.stdout
    assert "tenant registry 'pos', tenant 'badco': DSN refused" in relayed.output
    assert relayed.exit_code == 3  # deadco unreachable (3 wins over badco's bad row: 2)
    assert pending_rows(acme) == 0

    status = run_cli(["status", "--json", "--config", str(config)], env=env)
    outputs.append(status.output)
    sources = {s["source"]: s for s in json.loads(status.stdout)["sources"]}
    assert set(sources) == {"pos:acme", "pos:badco", "pos:deadco"}
    assert "Connection refused" in sources["pos:deadco"]["error"]
    assert sources["pos:acme"]["log_head"] == 3 and sources["pos:acme"]["undelivered"] == 0
    assert sources["pos:acme"]["error"] is None
    assert "@" not in sources["pos:acme"]["url"]  # a tenant's: where it is, no user (masked)
    assert "DSN refused" in sources["pos:badco"]["error"]

    health = run_cli(["health", "--config", str(config)], env=env)
    outputs.append(health.output)
    assert health.exit_code == 1
    assert "source pos:badco: refused: " in health.output  # a bad row: the config's to fix
    assert "source pos:acme" not in health.output
    assert "source pos:deadco: unreachable" in health.output

    env["READMODEL_TENANTS__POS__URL"] = "postgresql://pos:reg-s3cret@127.0.0.1:1/registry"
    status = run_cli(["status", "--json", "--config", str(config)], env=env)
    outputs.append(status.output)
    (source,) = json.loads(status.stdout)["sources"]
    assert source["source"] == "pos" and "tenant registry 'pos'" in source["error"]
    assert "cannot be read" in source["error"]
    health = run_cli(["health", "--config", str(config)], env=env)
    outputs.append(health.output)
    assert health.exit_code == 1 and "source pos: unreachable" in health.output
    relayed = run_cli(["relay", "--once", "--config", str(config)], env=env)
    outputs.append(relayed.output)
    assert relayed.exit_code == 3 and "cannot be read" in relayed.output

    text = "\n".join(outputs)
    for secret in ("acme-s3cret", "badco-s3cret", "reg-s3cret", acme_dsn.removeprefix("fernet:")):
        assert secret not in text


def test_each_bad_row_is_named_by_tenant_and_the_rest_are_members(tmp_path: Path) -> None:
    registry_url = f"sqlite:///{tmp_path / 'registry.db'}"
    good = f"sqlite:///{tmp_path / 'good.db'}"
    make_registry(
        registry_url,
        {
            "good": good,
            "": good,
            "bad id!": good,
            "nodsn": None,
            "scheme": "redis://u:scheme-pw@host/0",
            "token": "fernet:gAAAA-cut",
            "postgresql://u:swapped-pw@h/db": "acme",
        },
    )
    registry_sql(registry_url, "INSERT INTO tenants VALUES ('good', 'sqlite:///other.db', true)")
    settings = load_settings(
        None,
        tenants={"pos": {"url": registry_url, "query": "SELECT tenant_id, dsn FROM tenants"}},
    )
    registry = TenantRegistry("pos", settings.tenants["pos"])
    members = registry.read()
    registry.close()
    assert list(members.sources) == ["pos:good"]
    member = members.sources["pos:good"]
    assert (member.url, member.tenant, member.columns.tenant) == (good, "good", "")
    problems = [str(p) for p in members.problems]
    assert problems == [
        "tenant registry 'pos', row 2: no tenant id",
        "tenant registry 'pos', row 3: the first column ('tenant_id') is no tenant id (not "
        "shown: a password or DSN selected first would be): expected a source name (letters, "
        "digits, '.', '_', '-'; at most 100), then the DSN",
        "tenant registry 'pos', tenant 'nodsn': no DSN",
        "tenant registry 'pos', tenant 'scheme': DSN refused: expected a DSN starting with "
        "postgresql://, mysql://, mariadb://, sqlite:/// or mongodb://",
        "tenant registry 'pos', tenant 'token': DSN refused: an encrypted value (fernet:...) "
        "needs its key in READMODEL_SECRET_KEY (readmodel secret key makes one)",
        "tenant registry 'pos', row 7: the tenant id looks like a DSN: the query gives "
        "tenant id, DSN, in order",
        "tenant registry 'pos', row 8: tenant 'good' listed again; its first row is used",
    ]
    assert not any("pw" in problem for problem in problems)


def _advisory_locks(url: str) -> int:
    """The relays leading in ``url``'s database (each holds one exclusive advisory lock; the
    shared one that keeps earlier releases out is not counted)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND mode = 'ExclusiveLock' AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())"
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_an_unreadable_registry_keeps_the_members_and_a_removed_one_is_released(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    store, registry_url, acme, globex = (pg_database() for _ in range(4))
    for url in (acme, globex):
        init_tenant_outbox(url)
    make_registry(registry_url, {"acme": acme, "globex": globex})
    settings = load_settings(config_for(tmp_path, store, registry_url))
    log = EventLog(store)
    log.create_tables()
    tenants = TenantRelays(TenantRegistry("pos", settings.tenants["pos"]), log, settings.relay)
    try:
        tenants.refresh()
        assert tenants.members == ["pos:acme", "pos:globex"]
        assert wait_until(lambda: _advisory_locks(globex) == 1, 10)  # leading globex

        registry_sql(registry_url, "ALTER TABLE tenants RENAME TO tenants_gone")
        tenants.refresh()  # unreadable: the members known before keep running
        assert tenants.members == ["pos:acme", "pos:globex"]
        record_sales(globex, sales_for(1, 2))
        assert wait_until(lambda: log.heads().get("pos:globex") == 2, 10)

        registry_sql(registry_url, "ALTER TABLE tenants_gone RENAME TO tenants")
        registry_sql(registry_url, "DELETE FROM tenants WHERE tenant_id = 'globex'")
        tenants.refresh()
        assert tenants.members == ["pos:acme"]
        assert _advisory_locks(globex) == 0 and _advisory_locks(acme) == 1  # released at once
        record_sales(globex, sales_for(1, 1))
        time.sleep(0.5)
        assert log.heads()["pos:globex"] == 2 and pending_rows(globex) == 1
    finally:
        tenants.stop_all()
        tenants.registry.close()
        log.close()
    assert _advisory_locks(acme) == 0


def test_registry_settings_are_checked_where_they_are_written(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    registry = {"url": "sqlite:///registry.db"}
    write_config(path, {"tenants": {"pos": registry}})
    assert load_settings(path).tenants["pos"].refresh.total_seconds() == 30
    cases = [
        ({"pos": {**registry, "source": {"url": "sqlite:///x.db"}}}, {}, "tenants.pos.source.url"),
        ({"pos": {**registry, "source": {"batch_size": 0}}}, {}, "tenants.pos.source.batch_size"),
        ({"pos": {**registry, "query": "DELETE FROM tenants"}}, {}, "tenants.pos.query"),
        ({"pos": {**registry, "refresh": "1ms"}}, {}, "refresh must be at least 100ms"),
        ({"pos": {"url": "http://u:reg-pw@h/x"}}, {}, "tenants.pos.url"),
        ({"pos": registry}, {"pos:acme": {"url": "sqlite:///a.db"}}, "add the tenant to the"),
        ({"event": registry}, {}, "consistency tokens"),
    ]
    for tenants, sources, expected in cases:
        write_config(path, {"tenants": tenants, "sources": sources})
        with pytest.raises(ConfigError, match=re.escape(expected)) as raised:
            load_settings(path)
        assert str(path) in str(raised.value) and "reg-pw" not in str(raised.value)


def test_members_are_relayed_exactly_once_in_order_while_leaders_are_killed(
    pg_database: Callable[[], str], processes: Processes, tmp_path: Path
) -> None:
    store, registry = pg_database(), pg_database()
    tenants = {"acme": pg_database(), "globex": pg_database()}
    for url in tenants.values():
        init_tenant_outbox(url)
    make_registry(registry, tenants)
    config = str(config_for(tmp_path, store, registry, relay={"standby_retry": "200ms"}))
    assert run_cli(["migrate", "--config", config]).exit_code == 0
    first = processes.start("relay", "relay", "--config", config)
    second = processes.start("relay", "relay", "--config", config)  # a hot standby
    written = dict.fromkeys(tenants, 0)
    for batch in range(1, 10):
        for tenant, url in tenants.items():
            record_sales(url, [(f"r{r}", DAY, 100, batch) for r in range(5)])
            written[tenant] += 5
        if batch == 3:
            processes.kill(first)  # whichever led until now, the second leads from here on
        if batch == 5:
            processes.start("relay", "relay", "--config", config)
        if batch == 7:
            processes.kill(second)  # a leader: the third takes over
        time.sleep(0.3)
    log = EventLog(store)
    try:
        heads = {f"pos:{tenant}": count for tenant, count in written.items()}
        assert wait_until(lambda: log.heads() == heads, 30), processes.log_tail()
        for source, head in heads.items():
            events = log.read(source, 0, head, limit=head + 10)
            assert [e.position for e in events] == list(range(1, head + 1))
            assert {e.tenant for e in events} == {source.partition(":")[2]}
            for register in range(5):
                numbers = [e.payload["n"] for e in events if e.aggregate_id == f"r{register}"]
                assert numbers == list(range(1, 10))  # each sale once, in commit order
        assert all(pending_rows(url) == 0 for url in tenants.values())
        third = (tmp_path / "relay-3.log").read_text()
        assert third.count("leading source") == 2, third  # took both members over
    finally:
        log.close()
