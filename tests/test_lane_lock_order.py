"""Two lanes whose handlers read shared rows (a per-customer total fed by per-order events)
lock those rows (``tx.get``) until they commit. Without ``prefetch`` a handler reads them in
its own order, one at a time: lane 0 holds row A and wants B while lane 1 holds B and wants
A. The store locks in one order anyway: a lane waits only for a row after (in lock order)
every row it holds; a row before them it takes only if free, else it rolls back and starts
the batch again, taking the rows it learned first, in order. No cycle, no deadlock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from outbox.envelope import aggregate_hash
from projections.api import Event, Projection, Tx, on
from projections.sql_tx import row_lock_key
from projections.store import Lane
from tests.projection_fixtures import append_tenant_events, engine_on

metadata = sa.MetaData()
shared = sa.Table(
    "lock_order_totals",
    metadata,
    sa.Column("customer", sa.Text, primary_key=True),
    sa.Column("seen", sa.Integer, nullable=False),
)


class Pairs(Projection):
    """Each event reads two customers' rows in the order its payload gives, then adds one to
    both. The first attempt at each event meets the other lane's first attempt between its
    two reads (a barrier), so both hold one row before wanting the other. With ``"via":
    "prefetch"`` the second row is prefetched by the handler, then read; with ``"via":
    "wrapped"`` an error reading it is raised as the handler's own (the batch still starts
    again: waiting would have worked, the event did not fail)."""

    name = "lock_order"
    tables = (shared,)
    partitions = 2
    barrier: ClassVar[threading.Barrier | None] = None
    met: ClassVar[set[str]] = set()
    calls: ClassVar[list[str]] = []

    @on("bank", "Paired")
    def paired(self, event: Event[dict], tx: Tx) -> None:
        self.calls.append(event.aggregate_id)
        first, second = event.payload["reads"]
        rows = [tx.get(shared, first)]
        if self.barrier is not None and event.aggregate_id not in self.met:
            self.met.add(event.aggregate_id)
            self.barrier.wait()
        if event.payload["via"] == "prefetch":
            tx.prefetch(shared, [second])
        try:
            rows.append(tx.get(shared, second))
        except Exception as exc:
            if event.payload["via"] != "wrapped":
                raise
            raise RuntimeError(f"cannot look {second} up") from exc  # a handler's own wrapping
        for customer, row in zip((first, second), rows, strict=True):
            tx.upsert(shared, {"customer": customer, "seen": (row["seen"] if row else 0) + 1})


def _in_partitions() -> tuple[str, str]:
    """Two aggregate ids of the lanes 0 and 1 of :class:`Pairs`."""
    ids = {aggregate_hash("account", f"o{n}") % 2: f"o{n}" for n in range(20)}
    return ids[0], ids[1]


def _by_lock_order(customers: list[str]) -> list[str]:
    return sorted(customers, key=lambda c: row_lock_key((shared.name, (c,))))


@pytest.mark.parametrize("via", ["get", "prefetch", "wrapped"])
def test_lanes_reading_shared_rows_in_opposite_orders_do_not_deadlock(
    via: str, pg_database: Callable[[], str]
) -> None:
    low, high = _by_lock_order(["c1", "c2"])
    lane0, lane1 = _in_partitions()
    Pairs.barrier = threading.Barrier(2, timeout=10)
    Pairs.met = set()
    Pairs.calls = []
    try:
        with engine_on(pg_database(), [Pairs()], max_attempts=1) as (log, store, engine):
            append_tenant_events(
                log,
                [
                    (None, lane0, "Paired", {"reads": [low, high], "via": via}),
                    (None, lane1, "Paired", {"reads": [high, low], "via": via}),
                ],
            )
            errors: list[BaseException] = []

            def work(partition: int) -> None:
                try:
                    engine.process(Lane(Pairs.name, "bank", partition))
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

            with capture_logs() as logs:
                threads = [threading.Thread(target=work, args=(p,)) for p in (0, 1)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            with log.engine.connect() as conn:
                rows = dict(conn.execute(sa.select(shared.c.customer, shared.c.seen)).all())
            parked = store.parked(Pairs.name)
    finally:
        Pairs.barrier = None
    assert errors == [] and parked == []
    assert Pairs.met == {lane0, lane1}  # both met at the barrier: the locks did cross
    assert len(Pairs.calls) == 3  # the lane that wanted a row before its own started again
    assert rows == {"c1": 2, "c2": 2}
    deadlocks: list[dict[str, Any]] = [e for e in logs if "deadlock" in e["event"]]
    assert deadlocks == []
