"""The relay survives database connections killed under it, and still logs every event once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from config import Settings
from outbox.db import create_engine
from outbox.errors import SourceError
from outbox.log import AppendResult, EventLog
from outbox.relay import KEPT_ERRORS, Relay, RelayHooks, RelayTotals, SourceRelay
from outbox.sources import open_source
from tests.conftest import MYSQL_ADMIN, PG_ADMIN, _admin_engine
from tests.outbox_helpers import init_outbox, insert_events

WRITER_APP = "rm-test-writer"
OBSERVER_APP = "rm-test-observer"  # the test's own view of the log, never terminated
EVENTS = 300
PER_TRANSACTION = 5


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class Writer(threading.Thread):
    """Commits ``EVENTS`` outbox rows, a few per transaction, on one connection of its own."""

    def __init__(self, engine: sa.Engine, pause: float) -> None:
        super().__init__(name="outbox-writer", daemon=True)
        self.engine = engine
        self.pause = pause
        self.written = 0
        self.connection_id: Any = None
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        table = sa.table(
            "outbox", *[sa.column(c) for c in ("aggregatetype", "aggregateid", "type", "payload")]
        )
        try:
            with self.engine.connect() as conn:
                if conn.dialect.name == "mysql":
                    self.connection_id = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
                conn.commit()
                self.ready.set()
                while self.written < EVENTS:
                    rows = [
                        {
                            "aggregatetype": "order",
                            "aggregateid": f"o{n % 7}",
                            "type": "OrderPlaced",
                            "payload": json.dumps({"n": n}),
                        }
                        for n in range(self.written, self.written + PER_TRANSACTION)
                    ]
                    conn.execute(sa.insert(table), rows)
                    conn.commit()
                    self.written += PER_TRANSACTION
                    time.sleep(self.pause)
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.ready.set()


def _progressed(log: EventLog, head_before: int, writer: Writer) -> bool:
    """The relay appended something since ``head_before``, or has caught up with the writer."""
    head = log.head("svc")
    return head > head_before or (not writer.is_alive() and head >= writer.written)


@contextmanager
def running(relay: Relay) -> Iterator[threading.Event]:
    """Run ``relay`` in a thread until the block ends."""
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), name="relay-under-test")
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the relay did not stop"


def _pending(source_db: sa.Engine) -> int:
    with source_db.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar_one())


def _assert_every_event_once_in_order(relay: Relay, source_db: sa.Engine) -> None:
    logged = relay.log.read("svc", limit=EVENTS * 2)
    assert [e.payload["n"] for e in logged] == list(range(EVENTS))
    assert [e.position for e in logged] == list(range(1, EVENTS + 1))
    assert len({e.event_id for e in logged}) == EVENTS
    with source_db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar_one() == 0


def test_postgres_relay_recovers_from_terminated_connections(
    pg_database: Callable[[], str], make_settings: Callable[..., Settings]
) -> None:
    source_url, store_url = pg_database(), pg_database()
    source_db_name = sa.make_url(source_url).database
    store_db_name = sa.make_url(store_url).database
    settings = make_settings(
        store_url,
        {"svc": {"url": source_url, "batch_size": 20, "poll_min": "5ms", "poll_max": "50ms"}},
        relay={"standby_retry": "100ms"},
    )
    init_outbox(settings.sources["svc"])
    admin = _admin_engine(PG_ADMIN)
    writer_db = create_engine(source_url, connect_args={"application_name": WRITER_APP})
    relay = Relay(settings)
    observer = EventLog(
        store_url,
        engine=create_engine(store_url, connect_args={"application_name": OBSERVER_APP}),
    )

    def relay_connections(database: str) -> int:
        with admin.connect() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = :db "
                        "AND pid <> pg_backend_pid() "
                        "AND application_name NOT IN (:writer, :observer)"
                    ),
                    {"db": database, "writer": WRITER_APP, "observer": OBSERVER_APP},
                ).scalar_one()
            )

    def terminate(database: str) -> int:
        with admin.connect() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                        "FROM pg_stat_activity WHERE datname = :db "
                        "AND pid <> pg_backend_pid() "
                        "AND application_name NOT IN (:writer, :observer)"
                    ),
                    {"db": database, "writer": WRITER_APP, "observer": OBSERVER_APP},
                ).scalar_one()
            )

    writer = Writer(writer_db, pause=0.03)
    killed: list[tuple[int, int, int]] = []
    try:
        with running(relay):
            writer.start()
            for threshold in (40, 100, 160, 220):
                wait_for(lambda t=threshold: writer.written >= t, 20, f"{threshold} writes")
                # Kill while the relay holds its connections and makes progress.
                wait_for(lambda: relay_connections(source_db_name) > 0, 10, "relay reconnect")
                written, head = writer.written, observer.head("svc")
                source_killed = terminate(source_db_name)
                log_killed = terminate(store_db_name) if threshold in (100, 220) else 0
                killed.append((written, source_killed, log_killed))
                wait_for(lambda h=head: _progressed(observer, h, writer), 10, "progress")
            writer.join(timeout=30)
            assert writer.error is None, writer.error
            wait_for(lambda: observer.head("svc") >= EVENTS, 30, "the log to catch up")
            # A batch logged just before a kill may still wait for its acknowledgement: the
            # relay re-claims it after its error backoff and finds it logged already.
            wait_for(lambda: _pending(writer_db) == 0, 30, "every row acknowledged")
            time.sleep(0.1)  # a duplicate append would show up now
        totals = relay.relays[0].totals

        _assert_every_event_once_in_order(relay, writer_db)
        # The faults really happened, mid-stream, and the relay noticed them.
        assert all(source_killed >= 1 for _, source_killed, _ in killed), killed
        assert sum(log_killed for _, _, log_killed in killed) >= 1, killed
        assert any(written < EVENTS for written, _, _ in killed), killed
        assert totals.errors, "the relay never saw a failure: the kills missed it"
    finally:
        relay.close()
        observer.close()
        writer_db.dispose()
        admin.dispose()


def test_mariadb_relay_recovers_from_killed_connections(
    mysql_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    source_url = mysql_database()
    source_db_name = sa.make_url(source_url).database
    settings = make_settings(
        sqlite_database(),
        {"svc": {"url": source_url, "batch_size": 20, "poll_min": "5ms", "poll_max": "50ms"}},
        relay={"standby_retry": "100ms"},
    )
    init_outbox(settings.sources["svc"])
    admin = _admin_engine(MYSQL_ADMIN)
    writer_db = create_engine(source_url)
    relay = Relay(settings)
    writer = Writer(writer_db, pause=0.03)

    def relay_connection_ids() -> list[int]:
        with admin.connect() as conn:
            return [
                int(row[0])
                for row in conn.execute(
                    sa.text(
                        "SELECT id FROM information_schema.processlist "
                        "WHERE db = :db AND id <> CONNECTION_ID() AND id <> :writer"
                    ),
                    {"db": source_db_name, "writer": writer.connection_id},
                )
            ]

    def kill_relay_connections() -> int:
        ids = relay_connection_ids()
        killed = 0
        with admin.connect() as conn:
            for connection_id in ids:
                try:
                    conn.exec_driver_sql(f"KILL {int(connection_id)}")
                    killed += 1
                except sa.exc.OperationalError:  # it went away on its own meanwhile
                    pass
        return killed

    killed: list[tuple[int, int]] = []
    try:
        with running(relay):
            writer.start()
            assert writer.ready.wait(10) and writer.error is None, writer.error
            for threshold in (40, 120, 200):
                wait_for(lambda t=threshold: writer.written >= t, 20, f"{threshold} writes")
                wait_for(lambda: bool(relay_connection_ids()), 10, "relay reconnect")
                written, head = writer.written, relay.log.head("svc")
                killed.append((written, kill_relay_connections()))
                wait_for(lambda h=head: _progressed(relay.log, h, writer), 10, "progress")
            writer.join(timeout=30)
            assert writer.error is None, writer.error
            wait_for(lambda: relay.log.head("svc") >= EVENTS, 30, "the log to catch up")
            wait_for(lambda: _pending(writer_db) == 0, 30, "every row acknowledged")
            time.sleep(0.1)
        totals = relay.relays[0].totals

        _assert_every_event_once_in_order(relay, writer_db)
        assert all(count >= 1 for _, count in killed), killed
        assert any(written < EVENTS for written, _ in killed), killed
        assert totals.errors, "the relay never saw a failure: the kills missed it"
    finally:
        relay.close()
        writer_db.dispose()
        admin.dispose()


class _SourceKilledAfterAppend(EventLog):
    """An event log that, once, terminates every other connection to the source database
    right after a batch is appended: the relay's acknowledgement then fails."""

    def __init__(self, url: str, source_url: str) -> None:
        super().__init__(url)
        self.source_url = source_url
        self.kill = True

    def append(
        self, source: str, records: Any, malformed: Any = (), **options: Any
    ) -> AppendResult:
        result = super().append(source, records, malformed, **options)
        if self.kill:
            self.kill = False
            killer = create_engine(self.source_url)
            try:
                with killer.connect() as conn:
                    conn.exec_driver_sql(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
            finally:
                killer.dispose()
        return result


def test_a_batch_whose_acknowledgement_fails_is_counted_once_as_relayed(
    pg_database: Callable[[], str], make_settings: Callable[..., Settings]
) -> None:
    source_url = pg_database()
    settings = make_settings(pg_database(), {"svc": {"url": source_url, "batch_size": 100}})
    init_outbox(settings.sources["svc"])
    # The kill below also ends this engine's pooled connection; the test must not read with it.
    source_db = create_engine(source_url, pool_pre_ping=True)
    insert_events(source_db, [("order", f"o{n}", "OrderPlaced", {"n": n}) for n in range(30)])
    log = _SourceKilledAfterAppend(settings.store.url, source_url)
    log.create_tables()
    source = open_source("svc", settings.sources["svc"])
    seen: list[tuple[int, int]] = []

    class Seen(RelayHooks):
        def after_append(self, source: str, result: AppendResult) -> None:
            seen.append((result.appended, result.duplicates))

    relay = SourceRelay(source, log, hooks=[Seen()])
    try:
        assert source.try_lead()
        with pytest.raises(SourceError, match="svc"):
            relay.step()
        # In the log, so counted and reported, although the source never heard of it.
        assert (relay.totals.relayed, relay.totals.duplicates) == (30, 0)
        assert seen == [(30, 0)]
        assert _pending(source_db) == 30

        totals = relay.drain()  # the rows come back: duplicates, not relayed twice

        assert (totals.relayed, totals.duplicates) == (30, 30)
        assert seen == [(30, 0), (0, 30)]
        assert [e.payload["n"] for e in log.read("svc")] == list(range(30))
        assert _pending(source_db) == 0
    finally:
        source.close()
        log.close()
        source_db.dispose()


def test_a_relay_that_keeps_failing_keeps_only_its_latest_errors() -> None:
    """A relay retrying a dead database for days must not grow without bound."""
    totals = RelayTotals()
    for n in range(KEPT_ERRORS + 150):
        totals.add_error(f"failure {n}")
    assert totals.errors == [f"failure {n}" for n in range(150, KEPT_ERRORS + 150)]
