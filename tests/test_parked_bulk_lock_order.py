"""``readmodel parked skip --projection P`` on PostgreSQL against a replay's swap, which
locks P's parked entries in id order (``sql_settle.lock_parked``): the bulk skip must take
its entries' locks in the same order, or the two deadlock and one fails.

The entries' physical order differs from their ids once one was updated (its new row
version lies behind the others): id 1 is read last by a scan. The race is ordered with real
connections: a third connection holds id 3 while the bulk skip starts and the swap's
``lock_parked`` runs; then lets go. Before, the bulk skip (an UPDATE in scan order) held id
2 waiting for 3, the swap held 1 waiting for 2; once 3 was let go, the skip wanted 1:
'deadlock detected'. Now the skip locks 1 and 2 (id order) first, the swap waits for it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from projections.sql_settle import lock_parked
from projections.sql_store import SqlStore
from projections.store_tables import metadata, parked_events

WAIT = 30.0
NAME = "totals"


class Run(threading.Thread):
    """``task()`` in a thread; keeps what it returned or raised."""

    def __init__(self, task: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.task = task
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.task()
        except BaseException as exc:  # asserted by the test
            self.error = exc


def _waiting(probe: sa.Engine) -> int:
    """Sessions of this database waiting for a lock."""
    with probe.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(DISTINCT l.pid) FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE NOT l.granted AND a.datname = current_database()"
            )
        ).scalar_one()


def _start_until_waiting(task: Callable[[], Any], probe: sa.Engine, waiting: int) -> Run:
    """Start ``task``; return once ``waiting`` sessions wait for a lock (a wait-until)."""
    run = Run(task)
    run.start()
    deadline = time.monotonic() + WAIT
    while _waiting(probe) < waiting:
        assert run.is_alive(), (run.result, run.error)
        assert time.monotonic() < deadline, "never waited on a lock"
        time.sleep(0.02)
    return run


@pytest.fixture
def store(pg_database: Callable[[], str]) -> Iterator[SqlStore]:
    """Three parked entries of ``totals``, ids 1-3, id 1 stored behind the others."""
    store = SqlStore(pg_database())
    metadata.create_all(store.engine)
    with store.engine.begin() as conn:
        conn.execute(
            parked_events.insert(),
            [
                {
                    "projection": NAME,
                    "source": "bank",
                    "position": position,
                    "event_id": f"e{position}",
                    "aggregate_type": "account",
                    "aggregate_id": f"a{position}",
                    "event_type": "Deposited",
                    "reason": "boom",
                }
                for position in (1, 2, 3)
            ],
        )
        conn.execute(  # a new row version of id 1, after the others (as a counted attempt)
            parked_events.update()
            .where(parked_events.c.id == 1)
            .values(attempts=parked_events.c.attempts + 1)
        )
        conn.execute(sa.text("ANALYZE rm_parked_events"))
    yield store
    store.close()


def _swap_lock(store: SqlStore) -> None:
    with store.engine.begin() as conn:
        lock_parked(conn, NAME)


def test_a_bulk_skip_locks_its_entries_in_id_order_as_the_swap_does(store: SqlStore) -> None:
    with store.engine.connect() as conn:
        order = [row.id for row in conn.execute(sa.text("SELECT id FROM rm_parked_events"))]
    assert order == [2, 3, 1]  # a scan reads id 1 last

    probe = sa.create_engine(store.engine.url, poolclass=sa.pool.NullPool)
    holder = store.engine.connect()
    try:
        holder.begin()
        holder.execute(sa.text("SELECT id FROM rm_parked_events WHERE id = 3 FOR UPDATE"))
        skip = _start_until_waiting(lambda: store.skip_parked_many([1, 2, 3]), probe, 1)
        swap = _start_until_waiting(lambda: _swap_lock(store), probe, 2)
        holder.rollback()
        skip.join(WAIT)
        swap.join(WAIT)
    finally:
        holder.close()
        probe.dispose()

    assert not skip.is_alive() and not swap.is_alive()
    assert skip.error is None, skip.error
    assert swap.error is None, swap.error
    assert skip.result == 3
    with store.engine.connect() as conn:
        statuses = conn.execute(sa.select(parked_events.c.status)).scalars().all()
    assert statuses == ["skipped"] * 3
