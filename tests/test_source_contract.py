"""One contract for "an outbox source", run against PostgreSQL, MariaDB, SQLite and MongoDB."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from config import Settings
from outbox.db import create_engine
from outbox.log import EventLog
from outbox.relay import Relay, SourceRelay
from outbox.sources import open_source
from tests.conftest import ENGINES
from tests.outbox_helpers import OutboxDb, append_unacknowledged, init_outbox, outbox_db


@pytest.fixture(params=(*ENGINES, "mongodb"))
def engine_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=["delete", "mark"])
def on_dispatch(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def setup(
    request: pytest.FixtureRequest,
    engine_name: str,
    on_dispatch: str,
    database_for: Callable[[str], str],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> Iterator[tuple[Settings, OutboxDb]]:
    if engine_name == "mongodb":
        source_url = request.getfixturevalue("mongo_database")()
    else:
        source_url = database_for(engine_name)
    settings = make_settings(
        pg_database(), {"svc": {"url": source_url, "on_dispatch": on_dispatch, "batch_size": 100}}
    )
    init_outbox(settings.sources["svc"])
    db = outbox_db(source_url)
    yield settings, db
    db.close()


def _outbox_rows(db: OutboxDb, pending_only: bool) -> int:
    return db.count(pending_only=pending_only)


def test_relays_every_row_once_in_outbox_order(setup: tuple[Settings, OutboxDb]) -> None:
    settings, source_db = setup
    events = [("order", f"o{i % 13}", "OrderPlaced", {"n": i}) for i in range(1, 351)]
    source_db.insert(events)

    relay = Relay(settings)
    totals = relay.drain()["svc"]

    assert (totals.relayed, totals.duplicates, totals.parked) == (350, 0, 0)
    logged = relay.log.read("svc", limit=1000)
    assert [e.payload["n"] for e in logged] == list(range(1, 351))
    assert [e.position for e in logged] == list(range(1, 351))
    assert relay.log.head("svc") == 350
    assert _outbox_rows(source_db, pending_only=True) == 0
    expected_left = 0 if settings.sources["svc"].on_dispatch == "delete" else 350
    assert _outbox_rows(source_db, pending_only=False) == expected_left
    relay.close()


def test_crash_between_append_and_acknowledge_is_deduplicated(
    setup: tuple[Settings, OutboxDb],
) -> None:
    settings, source_db = setup
    source_db.insert([("user", f"u{i}", "UserRegistered", {"n": i}) for i in range(40)])
    log = EventLog(settings.store.url)
    log.create_tables()
    source = open_source("svc", settings.sources["svc"])
    relay = SourceRelay(source, log)
    assert source.try_lead()
    # Append the claimed rows to the log but "crash" before acknowledging them.
    append_unacknowledged(source, log, 25)

    totals = relay.drain()

    assert totals.relayed == 15
    assert totals.duplicates == 25
    assert [e.payload["n"] for e in log.read("svc")] == list(range(40))
    assert _outbox_rows(source_db, pending_only=True) == 0
    source.close()
    log.close()


def test_second_relay_stands_by_while_first_leads(setup: tuple[Settings, OutboxDb]) -> None:
    settings, _ = setup
    first = open_source("svc", settings.sources["svc"])
    second = open_source("svc", settings.sources["svc"])
    try:
        assert first.try_lead()
        assert not second.try_lead()
        first.close()
        assert second.try_lead()
    finally:
        first.close()
        second.close()


def _assert_relays_one_event_of_now(settings: Settings) -> None:
    """The source holds one event, written moments ago: the relay logs it with that time."""
    from datetime import UTC, datetime

    relay = Relay(settings)
    try:
        assert relay.drain()["svc"].relayed == 1
        (event,) = relay.log.read("svc")
    finally:
        relay.close()
    assert event.occurred_at is not None
    assert abs((datetime.now(UTC) - event.occurred_at).total_seconds()) < 60


def test_mysql_outbox_times_are_utc_whatever_the_writers_time_zone(
    mysql_database: Callable[[], str],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    """The outbox's DATETIME columns hold UTC (naive values are read as UTC): the default is
    UTC_TIMESTAMP, not the writing session's local CURRENT_TIMESTAMP."""
    from datetime import UTC, datetime

    source_url = mysql_database()
    settings = make_settings(pg_database(), {"svc": {"url": source_url, "on_dispatch": "mark"}})
    init_outbox(settings.sources["svc"])
    engine = create_engine(source_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("SET time_zone = '+05:00'")
            conn.exec_driver_sql(
                "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                "VALUES ('order', 'o1', 'OrderPlaced', '{}')"
            )
        _assert_relays_one_event_of_now(settings)
        with engine.connect() as conn:
            conn.exec_driver_sql("SET time_zone = '+05:00'")
            dispatched = conn.exec_driver_sql("SELECT dispatched_at FROM outbox").scalar_one()
        assert abs((datetime.now(UTC) - dispatched.replace(tzinfo=UTC)).total_seconds()) < 60
    finally:
        engine.dispose()


def test_mysql_timestamp_columns_are_read_in_utc_whatever_the_servers_time_zone(
    mysql_database: Callable[[], str],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    """A TIMESTAMP column is returned in the session's time zone: readmodel's sessions use
    UTC, so a server whose default zone is not UTC (set here by the DSN's init_command)
    neither shifts events' times nor their age in health checks."""

    url = mysql_database()
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE outbox (seq BIGINT AUTO_INCREMENT PRIMARY KEY, aggregatetype "
                "VARCHAR(50), aggregateid VARCHAR(50), type VARCHAR(50), payload JSON, "
                "timestamp TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6))"
            )
            conn.exec_driver_sql(
                "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                "VALUES ('order', 'o1', 'OrderPlaced', '{}')"
            )
    finally:
        engine.dispose()
    source_url = f"{url}?init_command=SET time_zone%3D'-05:00'"
    settings = make_settings(pg_database(), {"svc": {"url": source_url}})
    _assert_relays_one_event_of_now(settings)
