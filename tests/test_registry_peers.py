"""A relay checks its registry's members against the other registries' (``Peers``): a peer
that cannot be read is checked against with what it listed last, tried again after a
back-off, and one that hangs is read in the background while the refreshes go on."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from config import load_settings
from outbox.log import EventLog
from outbox.registry_peers import Peers
from outbox.tenant_registry import Members, TenantRegistry
from outbox.tenant_relays import TenantRelays
from tests.broker_helpers import wait_until
from tests.cli_helpers import run_cli, with_password
from tests.conftest import allow_connections
from tests.tenant_fixtures import (
    init_tenant_outbox,
    make_registry,
    record_sales,
    registry_sql,
    sales_for,
)
from tests.tenant_helpers import registries_config


@pytest.fixture
def pos_relays(
    pg_database: Callable[[], str], tmp_path: Path
) -> Iterator[Callable[[dict[str, str], str], TenantRelays]]:
    """The relays of registry ``pos`` in a configuration of the given registries, with the
    peers of a running relay (``read_bound``: seconds before a peer's read is given up);
    stopped after the test."""
    made: list[tuple[TenantRelays, EventLog]] = []
    store = pg_database()

    def make(
        registries: dict[str, str], refresh: str = "200ms", read_bound: float = 30.0
    ) -> TenantRelays:
        config = registries_config(tmp_path, store, registries, refresh)
        assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
        settings = load_settings(config)
        log = EventLog(store)
        registry = TenantRegistry("pos", settings.tenants["pos"], settings.sources)
        peers = Peers(settings, log.engine, read_bound=read_bound)
        relays = TenantRelays(registry, log, settings.relay, peers=peers)
        made.append((relays, log))
        return relays

    yield make
    for relays, log in made:
        relays.stop_all()
        relays.registry.close()
        log.close()


def _problems(members: Members) -> list[str]:
    return [str(p) for p in members.problems]


def test_an_unreadable_peer_is_checked_against_with_the_members_it_listed_last(
    pg_database: Callable[[], str], pos_relays: Callable[..., TenantRelays], tmp_path: Path
) -> None:
    pos, shop, shared = (pg_database() for _ in range(3))
    init_tenant_outbox(shared)
    make_registry(pos, {})
    make_registry(shop, {"acme": shared})
    relays = pos_relays({"pos": pos, "shop": shop})
    record_sales(shared, sales_for(1, 1))  # shop:acme relays it first: it keeps it
    config = str(tmp_path / "pos.toml")
    assert run_cli(["relay", "--once", "--source", "shop", "--config", config]).exit_code == 0
    registry_sql(pos, "INSERT INTO tenants VALUES ('acme', :d, true)", d=shared)
    refusal = (
        "tenant registry 'pos', tenant 'acme': the same database and outbox table as tenant "
        "'acme' of tenant registry 'shop'"
    )
    assert any(p.startswith(refusal) for p in _problems(relays.read()))

    registry_sql(shop, "ALTER TABLE tenants RENAME TO tenants_away")
    time.sleep(0.3)  # shop's reading is older than its refresh: read again, and failing
    members = relays.read()
    assert any(p.startswith(refusal) for p in _problems(members)), _problems(members)
    assert "pos:acme" not in members.sources


def test_a_failing_peer_is_tried_again_after_a_back_off_not_at_every_refresh(
    pg_database: Callable[[], str],
    pos_relays: Callable[..., TenantRelays],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pos, shop, a = (pg_database() for _ in range(3))
    init_tenant_outbox(a)
    make_registry(pos, {"a": a})
    make_registry(shop, {})
    registry_sql(shop, "ALTER TABLE tenants RENAME TO tenants_away")
    relays = pos_relays({"pos": pos, "shop": shop}, refresh="5s")
    reads: list[str] = []
    read = TenantRegistry.read

    def counted(registry: TenantRegistry, *args: Any) -> Members:
        reads.append(registry.group)
        return read(registry, *args)

    monkeypatch.setattr(TenantRegistry, "read", counted)
    for _ in range(4):
        members = relays.read()
    assert reads.count("shop") == 1, reads
    assert reads.count("pos") == 4
    waits = "tenant registry 'pos', tenant 'a': waits until tenant registry 'shop' is read"
    assert any(p.startswith(waits) for p in _problems(members)), _problems(members)


def test_a_hung_peer_is_read_once_in_the_background_while_the_refreshes_go_on(
    pg_database: Callable[[], str], pos_relays: Callable[..., TenantRelays]
) -> None:
    pos, shop, a, b = (pg_database() for _ in range(4))
    init_tenant_outbox(a)
    init_tenant_outbox(b)
    record_sales(a, sales_for(1, 1))
    make_registry(pos, {"a": a, "b": b})
    make_registry(shop, {})
    relays = pos_relays({"pos": pos, "shop": shop})
    relays.refresh()  # both read: pos:a and pos:b relay
    assert relays.members == ["pos:a", "pos:b"]
    assert wait_until(lambda: relays.log.heads().get("pos:a", 0) > 0, 10)

    locker = sa.create_engine(sa.make_url(shop).set(drivername="postgresql+psycopg"))
    held = locker.connect()
    try:
        held.exec_driver_sql("BEGIN; LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE")
        time.sleep(0.3)  # shop's reading is older than its refresh: read again, and hangs
        for _ in range(3):
            relays.refresh()
        # Three refreshes went on while one read of shop waits for the lock (not one per
        # refresh, and none given up on: the refreshes did not wait for its timeout). pos:a,
        # which the log has events of, relays on; pos:b, which it has none of, waits: shop
        # may list b's database by now, with events.
        assert _waiting_reads(locker, shop) == 1
        assert relays.members == ["pos:a"]
    finally:
        held.exec_driver_sql("ROLLBACK")
        held.close()
        assert wait_until(lambda: _waiting_reads(locker, shop) == 0, 10)
        locker.dispose()


def _waiting_reads(engine: sa.Engine, url: str) -> int:
    name = sa.make_url(url).database
    with engine.connect() as conn:
        return int(
            conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND wait_event_type = 'Lock'",
                (name,),
            ).scalar_one()
        )


def test_an_unreadable_event_log_is_the_registrys_error_and_its_members_keep_running(
    pg_database: Callable[[], str], pos_relays: Callable[..., TenantRelays]
) -> None:
    pos, shop, a = (pg_database() for _ in range(3))
    init_tenant_outbox(a)
    make_registry(pos, {"a": a})
    make_registry(shop, {})
    relays = pos_relays({"pos": pos, "shop": shop})
    relays.refresh()
    assert relays.members == ["pos:a"]
    assert relays.peers is not None
    absent = sa.make_url(pos).set(
        drivername="postgresql+psycopg", database=f"rm_absent_{uuid.uuid4().hex[:12]}"
    )
    gone = sa.create_engine(absent)  # a database that does not exist: never connects
    relays.peers._log_engine = gone  # noqa: SLF001 - the event log as an outage leaves it
    try:
        with capture_logs() as logs:
            relays.refresh()
        assert relays.members == ["pos:a"]
        (warning,) = [e for e in logs if e["log_level"] == "warning"]
        assert warning["event"].startswith("event log unreadable while checking"), warning
        assert "the event log cannot be read" in warning["error"]

        (totals,) = relays.drain().values()  # relay --once: the registry's error, no trace
        assert totals.errors[0].startswith("the event log cannot be read"), totals.errors
    finally:
        gone.dispose()


def test_a_peer_read_once_then_unreadable_holds_back_a_member_the_log_has_no_events_of(
    pg_database: Callable[[], str], pos_relays: Callable[..., TenantRelays], tmp_path: Path
) -> None:
    """shop was read (listing x only), then starts relaying acme's database, then cannot be
    read: pos's new acme (no events) must not relay that database under a second name."""
    pos, shop, shared, x = (pg_database() for _ in range(4))
    init_tenant_outbox(shared)
    init_tenant_outbox(x)
    make_registry(pos, {})
    make_registry(shop, {"x": x})
    relays = pos_relays({"pos": pos, "shop": shop})
    relays.refresh()  # shop read: it lists x only

    registry_sql(shop, "INSERT INTO tenants VALUES ('acme', :d, true)", d=shared)
    record_sales(shared, sales_for(1, 2))
    config = str(tmp_path / "pos.toml")
    assert run_cli(["relay", "--once", "--source", "shop", "--config", config]).exit_code == 0
    assert relays.log.heads().get("shop:acme") == 2

    registry_sql(pos, "INSERT INTO tenants VALUES ('acme', :d, true)", d=shared)
    allow_connections(shop, False)
    try:
        time.sleep(0.3)  # shop's reading is older than its refresh: read again, and failing
        with capture_logs() as logs:
            relays.refresh()
            relays.refresh()  # in back-off now: still waits, logged once
        assert relays.members == []
        waits = "tenant registry 'pos', tenant 'acme': waits until tenant registry 'shop' is read"
        (event,) = [e for e in logs if e["event"] == "tenant source waits"]
        assert event["problem"].startswith(waits), event
        assert "postgresql://" not in event["problem"]
        record_sales(shared, [("r0", "2026-11-27", 100, 3)])
        assert "pos:acme" not in relays.log.heads()
    finally:
        allow_connections(shop, True)

    refused = (
        "tenant registry 'pos', tenant 'acme': the same database and outbox table as tenant "
        "'acme' of tenant registry 'shop'"
    )
    # shop is read again after its back-off: acme is refused, shop:acme keeps its database.
    assert wait_until(lambda: any(p.startswith(refused) for p in _problems(relays.read())), 10)
    assert "pos:acme" not in relays.log.heads()


def test_a_peer_read_that_never_answers_is_given_up_with_a_warning_and_read_again(
    pg_database: Callable[[], str], pos_relays: Callable[..., TenantRelays]
) -> None:
    """A read stuck past the bound (here a lock the test holds; a TCP stall mid-query, which
    no statement timeout ends, in production) is given up: warned about, naming the
    registry and no DSN, and the registry read again on a new connection."""
    pos, shop, a = (pg_database() for _ in range(3))
    init_tenant_outbox(a)
    make_registry(pos, {"a": a})
    make_registry(shop, {})
    relays = pos_relays(
        {"pos": pos, "shop": with_password(shop, "shop-s3cret") + "?application_name=rm"},
        read_bound=0.5,
    )
    locker = sa.create_engine(sa.make_url(shop).set(drivername="postgresql+psycopg"))
    held = locker.connect()
    try:
        held.exec_driver_sql("BEGIN; LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE")
        waits = "tenant registry 'pos', tenant 'a': waits until tenant registry 'shop' is read"
        with capture_logs() as logs:
            # relay --once waits for a stuck peer no longer than the bound
            members = relays.read(peer_wait=None)
            assert any(p.startswith(waits) for p in _problems(members)), _problems(members)
            assert _waiting_reads(locker, shop) == 1
            members = relays.read(peer_wait=0.6)  # past the bound: given up, read again
            assert any(p.startswith(waits) for p in _problems(members)), _problems(members)
        assert wait_until(lambda: _waiting_reads(locker, shop) == 2, 5)
        (warning,) = [e for e in logs if e.get("registry") == "shop"]
        assert warning["log_level"] == "warning"
        assert "no answer" in warning["event"] or "no answer" in warning["error"], warning
        text = repr(logs)
        assert "shop-s3cret" not in text and "postgresql://" not in text
        assert "application_name" not in text
    finally:
        held.exec_driver_sql("ROLLBACK")
        held.close()
        assert wait_until(lambda: _waiting_reads(locker, shop) == 0, 10)
        locker.dispose()
    # shop answers again: its reading is current, and pos:a relays.
    assert wait_until(lambda: not _problems(relays.read()), 10)


_GATE = """
CREATE TABLE tenant_rows (tenant_id TEXT, dsn TEXT, active BOOLEAN NOT NULL);
CREATE TABLE gate (closed BOOLEAN NOT NULL);
INSERT INTO gate VALUES (false);
CREATE FUNCTION gate() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  IF (SELECT closed FROM gate) THEN
    PERFORM pg_advisory_lock_shared(4242);
    PERFORM pg_advisory_unlock_shared(4242);
  END IF;
  RETURN true;
END $$;
CREATE VIEW tenants AS SELECT * FROM tenant_rows WHERE gate();
"""


def test_an_older_peer_reading_never_replaces_a_newer_one(
    pg_database: Callable[[], str], pos_relays: Callable[..., TenantRelays], tmp_path: Path
) -> None:
    """A background read of shop that began before shop's own read ends after it, with what
    shop listed when it began: it must not replace the newer reading (for one refresh,
    pos's new acme would relay a database shop:acme relays)."""
    pos, shop, shared = (pg_database() for _ in range(3))
    init_tenant_outbox(shared)
    make_registry(pos, {})
    gatekeeper = sa.create_engine(sa.make_url(shop).set(drivername="postgresql+psycopg"))
    with gatekeeper.begin() as conn:  # shop's registry: a view that waits while gated
        conn.exec_driver_sql(_GATE)
    registry_sql(shop, "INSERT INTO tenant_rows VALUES ('acme', :d, true)", d=shared)
    relays = pos_relays({"pos": pos, "shop": shop}, refresh="5s")
    record_sales(shared, sales_for(1, 2))
    config = str(tmp_path / "pos.toml")
    assert run_cli(["relay", "--once", "--source", "shop", "--config", config]).exit_code == 0
    assert relays.log.heads().get("shop:acme") == 2
    registry_sql(pos, "INSERT INTO tenants VALUES ('acme', :d, true)", d=shared)

    # shop lists another tenant instead of acme for a moment; a read of shop begins (pos's,
    # in the background), takes its snapshot and is held at the gate.
    other = sa.make_url(shared).set(database="rm_test_other").render_as_string(False)
    registry_sql(shop, "UPDATE tenant_rows SET tenant_id = 'zz', dsn = :d", d=other)
    registry_sql(shop, "UPDATE gate SET closed = true")
    held = gatekeeper.connect()
    try:
        held.exec_driver_sql("SELECT pg_advisory_lock(4242)")
        relays.read(peer_wait=0.2)
        assert wait_until(lambda: _waiting_reads(gatekeeper, shop) == 1, 5)
        # shop lists acme again, and its own relay reads it: the newer reading.
        registry_sql(shop, "UPDATE tenant_rows SET tenant_id = 'acme', dsn = :d", d=shared)
        registry_sql(shop, "UPDATE gate SET closed = false")
        assert relays.peers is not None
        settings = load_settings(config)
        own = TenantRegistry("shop", settings.tenants["shop"], settings.sources)
        try:
            relays.peers.settle(own.read(), wait=0)
        finally:
            own.close()
        held.exec_driver_sql("SELECT pg_advisory_unlock(4242)")  # the older read ends now
        assert relays.peers._peers["shop"].done.wait(5)  # noqa: SLF001 - its outcome is in
    finally:
        held.close()
        gatekeeper.dispose()
    members = relays.read(peer_wait=0)  # shop's reading is fresh (5 s): not read again
    refused = (
        "tenant registry 'pos', tenant 'acme': the same database and outbox table as tenant "
        "'acme' of tenant registry 'shop'"
    )
    assert any(p.startswith(refused) for p in _problems(members)), _problems(members)
    assert "pos:acme" not in members.sources


def test_registry_and_tenant_urls_are_logged_without_user_password_or_query(
    pg_database: Callable[[], str], pos_relays: Callable[..., TenantRelays]
) -> None:
    pos, shop, a = (pg_database() for _ in range(3))
    init_tenant_outbox(a)
    make_registry(pos, {"a": with_password(a, "tenant-s3cret") + "?application_name=rm_a"})
    make_registry(shop, {})
    secret = "?application_name=rm_reg"
    relays = pos_relays({"pos": with_password(pos, "pos-s3cret") + secret, "shop": shop + secret})

    def where(url: str) -> str:
        parsed = sa.make_url(url)
        return f"postgresql://{parsed.host}:{parsed.port}/{parsed.database}"

    with capture_logs() as logs:
        relays.refresh()  # pos:a relays
        registry_sql(shop, "ALTER TABLE tenants RENAME TO tenants_away")
        time.sleep(0.3)  # shop's reading is older than its refresh: read again, and failing
        relays.refresh()
        registry_sql(pos, "ALTER TABLE tenants RENAME TO tenants_away")
        relays.refresh()  # nor can pos: its members known before run on
    (relaying,) = [e for e in logs if e["event"] == "relaying tenant source"]
    assert relaying["url"] == where(a)
    unreadable = [e for e in logs if e["event"].startswith("tenant registry unreadable")]
    assert {e["registry"] for e in unreadable} == {"pos", "shop"}, logs
    for event in unreadable:
        url = pos if event["registry"] == "pos" else shop
        assert f"({where(url)})" in event["error"], event
    text = repr(logs)
    for leak in ("s3cret", "application_name", "postgres@", "postgres:"):
        assert leak not in text, (leak, text)
