"""Wake-ups (PostgreSQL LISTEN/NOTIFY versus polling) and the purge of marked outbox rows."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from config import Settings
from outbox.db import create_engine
from outbox.log import EventLog
from outbox.relay import Relay, SourceRelay
from outbox.sources import open_source
from tests.conftest import ENGINES, PG_ADMIN, _admin_engine
from tests.outbox_helpers import init_outbox, insert_events
from tests.relay_helpers import running, wait_for


def _listeners(database: str) -> int:
    admin = _admin_engine(PG_ADMIN)
    try:
        with admin.connect() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = :db AND query ILIKE 'LISTEN %'"
                    ),
                    {"db": database},
                ).scalar_one()
            )
    finally:
        admin.dispose()


def _event(n: int) -> tuple[str, str, str, dict[str, int]]:
    return ("order", f"o{n}", "OrderPlaced", {"n": n})


def test_notify_wakes_the_relay_long_before_the_next_poll(
    pg_database: Callable[[], str], make_settings: Callable[..., Settings]
) -> None:
    url = pg_database()  # outbox and read store share the database
    settings = make_settings(
        url, {"svc": {"url": url, "notify": True, "poll_min": "10s", "poll_max": "10s"}}
    )
    init_outbox(settings.sources["svc"])
    db = create_engine(url)
    relay = Relay(settings)
    try:
        insert_events(db, [_event(0)])
        with running(relay):
            wait_for(lambda: relay.log.head("svc") == 1, 10, "the first event")
            assert _listeners(sa.make_url(url).database or "") == 1
            latencies = []
            for n in range(1, 4):
                time.sleep(0.3)  # the relay is now inside a 10 s wait
                insert_events(db, [_event(n)])
                latencies.append(
                    wait_for(lambda n=n: relay.log.head("svc") == n + 1, 5, f"event {n}")
                )
        assert max(latencies) < 1.0, latencies
        assert [e.payload["n"] for e in relay.log.read("svc")] == [0, 1, 2, 3]
    finally:
        relay.close()
        db.dispose()


def _end_listeners(database: str) -> int:
    """Terminate the relay's LISTEN connection (a restarted pooler, an idle-session timeout)."""
    admin = _admin_engine(PG_ADMIN)
    try:
        with admin.connect() as conn:
            return len(
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :db AND query ILIKE 'LISTEN %'"
                    ),
                    {"db": database},
                ).all()
            )
    finally:
        admin.dispose()


def test_a_lost_listener_is_replaced_and_heard_at_once(
    pg_database: Callable[[], str], make_settings: Callable[..., Settings]
) -> None:
    """The relay's LISTEN connection ends: the relay slept out that wait and the next one
    whole (poll_max each), NOTIFYs unheard, before its new listener woke it again."""
    url = pg_database()
    database = sa.make_url(url).database or ""
    settings = make_settings(
        url, {"svc": {"url": url, "notify": True, "poll_min": "30s", "poll_max": "30s"}}
    )
    init_outbox(settings.sources["svc"])
    db = create_engine(url)
    relay = Relay(settings)
    try:
        insert_events(db, [_event(0)])
        with running(relay):
            wait_for(lambda: relay.log.head("svc") == 1, 10, "the first event")
            wait_for(lambda: _listeners(database) == 1, 10, "the relay to listen")
            time.sleep(0.3)  # the relay is now inside a 30 s wait
            assert _end_listeners(database) == 1
            for n in (1, 2):
                wait_for(lambda: _listeners(database) == 1, 10, "a new listener")
                time.sleep(0.3)
                insert_events(db, [_event(n)])
                wait_for(lambda n=n: relay.log.head("svc") == n + 1, 10, f"event {n}")
        assert [e.payload["n"] for e in relay.log.read("svc")] == [0, 1, 2]
    finally:
        relay.close()
        db.dispose()


def test_polling_delivers_without_notify(
    pg_database: Callable[[], str], make_settings: Callable[..., Settings]
) -> None:
    url = pg_database()
    settings = make_settings(url, {"svc": {"url": url, "notify": False, "poll_max": "200ms"}})
    init_outbox(settings.sources["svc"])
    db = create_engine(url)
    relay = Relay(settings)
    try:
        with running(relay):
            wait_for(lambda: "svc" in relay.log.heads() or _leading(relay), 10, "the relay")
            time.sleep(0.5)  # idle long enough for the poll interval to reach poll_max
            assert _listeners(sa.make_url(url).database or "") == 0
            latencies = []
            for n in range(3):
                insert_events(db, [_event(n)])
                latencies.append(
                    wait_for(lambda n=n: relay.log.head("svc") == n + 1, 5, f"event {n}")
                )
                time.sleep(0.25)
        assert max(latencies) < 1.0, latencies
        assert [e.payload["n"] for e in relay.log.read("svc")] == [0, 1, 2]
    finally:
        relay.close()
        db.dispose()


def _leading(relay: Relay) -> bool:
    return bool(getattr(relay.relays[0].source, "leading", False))


def _marked_and_pending(engine: sa.Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        marked = conn.exec_driver_sql(
            "SELECT count(*) FROM outbox WHERE dispatched_at IS NOT NULL"
        ).scalar_one()
        pending = conn.exec_driver_sql(
            "SELECT count(*) FROM outbox WHERE dispatched_at IS NULL"
        ).scalar_one()
    return int(marked), int(pending)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_marked_rows_are_purged_after_retention(
    engine_name: str,
    database_for: Callable[[str], str],
    sqlite_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    source_url = database_for(engine_name)
    store_url = source_url if engine_name == "postgresql" else sqlite_database()
    settings = make_settings(
        store_url, {"svc": {"url": source_url, "on_dispatch": "mark", "retention": "1s"}}
    )
    init_outbox(settings.sources["svc"])
    db = create_engine(source_url)
    log = EventLog(store_url)
    log.create_tables()
    source = open_source("svc", settings.sources["svc"])
    try:
        insert_events(db, [_event(n) for n in range(20)])
        before_marking = time.monotonic()
        assert SourceRelay(source, log).drain().relayed == 20
        after_marking = time.monotonic()
        insert_events(db, [_event(n) for n in range(20, 25)])  # committed, not yet relayed
        assert _marked_and_pending(db) == (20, 5)

        early = source.purge_dispatched()
        if time.monotonic() - before_marking < 0.8:  # (a slow machine may be past retention)
            assert early == 0
            assert _marked_and_pending(db) == (20, 5)

        time.sleep(max(0.0, after_marking + 1.3 - time.monotonic()))
        purged = source.purge_dispatched()

        assert early + purged == 20
        assert _marked_and_pending(db) == (0, 5)
        assert source.pending().undelivered == 5
        # The untouched rows are still relayed, after the purged ones, exactly once.
        assert SourceRelay(source, log).drain().relayed == 5
        assert [e.payload["n"] for e in log.read("svc")] == list(range(25))
    finally:
        source.close()
        log.close()
        db.dispose()
