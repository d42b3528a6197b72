"""A pending outbox row locked by another session (an operator's ``UPDATE``, a foreign key's
check): the later events of its aggregate are never relayed before it. PostgreSQL's claim
skips it (``SKIP LOCKED``) and holds back its aggregate's rows after it, the other
aggregates flowing meanwhile; MySQL's claim waits for it."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from config import Settings
from outbox.db import create_engine
from outbox.relay import Relay
from tests.outbox_helpers import init_outbox, insert_events


@pytest.mark.parametrize("on_dispatch", ["delete", "mark"])
@pytest.mark.parametrize("engine_name", ["postgresql", "mysql"])
def test_a_locked_row_is_relayed_before_the_later_events_of_its_aggregate(
    engine_name: str,
    on_dispatch: str,
    database_for: Callable[[str], str],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    """PostgreSQL's ``SKIP LOCKED`` claim skipped the locked OrderPlaced and relayed the
    OrderPaid committed after it first (log order OrderPaid, OrderPlaced)."""
    url = database_for(engine_name)
    settings = make_settings(pg_database(), {"svc": {"url": url, "on_dispatch": on_dispatch}})
    init_outbox(settings.sources["svc"])
    db = create_engine(url)
    insert_events(db, [("order", "o1", "OrderPlaced", {"n": 1})])
    insert_events(db, [("order", "o1", "OrderPaid", {"n": 2})])
    holder = db.connect()
    holder.exec_driver_sql(
        "UPDATE outbox SET type = type WHERE aggregateid = 'o1' AND type = 'OrderPlaced'"
    )
    unlock = threading.Timer(1.0, holder.commit)  # the operator's transaction ends
    relay = Relay(settings)
    try:
        unlock.start()
        first = relay.drain()["svc"]
        unlock.join()
        second = relay.drain()["svc"]
        assert first.errors == second.errors == []
        assert [(e.event_type, e.payload) for e in relay.log.read("svc")] == [
            ("OrderPlaced", {"n": 1}),
            ("OrderPaid", {"n": 2}),
        ]
    finally:
        unlock.cancel()
        relay.close()
        holder.close()
        db.dispose()


@pytest.mark.parametrize("on_dispatch", ["delete", "mark"])
def test_other_aggregates_flow_while_a_row_is_locked(
    on_dispatch: str,
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    """PostgreSQL: while o1's OrderPaid is locked, o1's OrderPlaced before it and o2's
    events are relayed, o1's OrderPaid and OrderShipped wait (not relayed out of order, not
    lost); unlocked, they follow in order."""
    url = pg_database()
    settings = make_settings(pg_database(), {"svc": {"url": url, "on_dispatch": on_dispatch}})
    init_outbox(settings.sources["svc"])
    db = create_engine(url)
    insert_events(db, [("order", "o1", "OrderPlaced", {"n": 1})])
    insert_events(db, [("order", "o2", "OrderPlaced", {"n": 2})])
    insert_events(db, [("order", "o1", "OrderPaid", {"n": 3})])
    insert_events(db, [("order", "o2", "OrderPaid", {"n": 4})])
    insert_events(db, [("order", "o1", "OrderShipped", {"n": 5})])
    holder = db.connect()
    holder.exec_driver_sql(
        "UPDATE outbox SET type = type WHERE aggregateid = 'o1' AND type = 'OrderPaid'"
    )
    relay = Relay(settings)
    try:
        first = relay.drain()["svc"]
        assert first.errors == []
        assert [e.payload["n"] for e in relay.log.read("svc")] == [1, 2, 4]
        holder.commit()
        second = relay.drain()["svc"]
        assert second.errors == []
        events = [(e.aggregate_id, e.payload["n"]) for e in relay.log.read("svc")]
        assert events == [("o1", 1), ("o2", 2), ("o2", 4), ("o1", 3), ("o1", 5)]
    finally:
        relay.close()
        holder.close()
        db.dispose()
