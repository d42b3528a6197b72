"""A parked event's retry and an in-place replay batch lock the rows their handlers read
(``tx.get``), as live batches do. When one of them and a live batch (or each other) read two
shared rows in opposite orders, each holding the first while wanting the second, the row
locks must not deadlock: PostgreSQL would abort one after ``deadlock_timeout`` (a failed
``readmodel parked retry`` or ``readmodel replay``, or a live batch rolled back and
retried). They take their row locks in the one order live batches do, starting again with
the keys they met when a key before one they hold is another's.

The crossing is made deterministic by a barrier in the handler: each side reads its first
row, waits for the other to have read its own, then reads its second."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from outbox.envelope import aggregate_hash
from projections.api import Event, Projection, Tx, on
from projections.log_reader import LogReader
from projections.replay import Replayer
from projections.replay_types import ReplayOptions
from projections.sql_tx import row_lock_key
from projections.store import Lane
from tests.projection_fixtures import append_tenant_events, engine_on

metadata = sa.MetaData()
seen = sa.Table(
    "crossing_seen",
    metadata,
    sa.Column("customer", sa.Text, primary_key=True),
    sa.Column("bank", sa.Integer),
    sa.Column("shop", sa.Integer),
)


class Crossing(Projection):
    """Each event reads two customers' rows in the order its payload gives and counts itself
    in both, in the column of its source (declared replay-safe: a replay counts again, which
    shows it applied the event). An event of an
    aggregate in :attr:`failing` fails; one in :attr:`crossing` (``source:aggregate``) waits
    at :attr:`barrier` between its two reads, once."""

    name = "crossing"
    tables = (seen,)
    partitions = 2
    replay_safe = True
    barrier: ClassVar[threading.Barrier | None] = None
    crossing: ClassVar[set[str]] = set()
    failing: ClassVar[set[str]] = set()

    @on("bank", "Paired")
    def bank(self, event: Event[dict], tx: Tx) -> None:
        self._paired(event, tx)

    @on("shop", "Paired")
    def shop(self, event: Event[dict], tx: Tx) -> None:
        self._paired(event, tx)

    def _paired(self, event: Event[dict], tx: Tx) -> None:
        if event.aggregate_id in self.failing:
            raise RuntimeError("not yet")
        first, second = event.payload["reads"]
        rows = [tx.get(seen, first)]
        meeting = f"{event.source}:{event.aggregate_id}"
        if self.barrier is not None and meeting in self.crossing:
            self.crossing.discard(meeting)
            self.barrier.wait()
        rows.append(tx.get(seen, second))
        for customer, row in zip((first, second), rows, strict=True):
            count = (row or {}).get(event.source) or 0
            tx.upsert(seen, {**(row or {"customer": customer}), event.source: count + 1})


def _in_partitions() -> tuple[str, str]:
    """Two aggregate ids of the lanes 0 and 1 of :class:`Crossing`."""
    ids = {aggregate_hash("account", f"o{n}") % 2: f"o{n}" for n in range(20)}
    return ids[0], ids[1]


def _low_high() -> tuple[str, str]:
    low, high = sorted(["c1", "c2"], key=lambda c: row_lock_key((seen.name, (c,))))
    return low, high


def _together(*calls: Callable[[], Any]) -> list[BaseException]:
    """Run ``calls`` in threads at once; the exceptions they raised."""
    errors: list[BaseException] = []

    def run(call: Callable[[], Any]) -> None:
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.fixture(autouse=True)
def _reset() -> Any:
    Crossing.barrier = None
    Crossing.crossing = set()
    Crossing.failing = set()
    yield
    Crossing.barrier = None


def _rows(engine: sa.Engine) -> dict[str, tuple[int | None, int | None]]:
    with engine.connect() as conn:
        return {c: (b, s) for c, b, s in conn.execute(sa.select(seen)).all()}


def _deadlocks(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if "deadlock" in e["event"]]


@pytest.mark.parametrize("other", ["live batch", "parked retry"])
def test_a_parked_retry_and_another_reading_rows_in_opposite_orders_do_not_deadlock(
    other: str, pg_database: Callable[[], str]
) -> None:
    """The retry holds the row after (in lock order) the one the other (a live batch of
    another lane, or the retry of a parked event there) holds, and each wants the other's:
    the other waits, so the retry must not (it starts again)."""
    low, high = _low_high()
    parked_id, other_id = _in_partitions()
    with engine_on(pg_database(), [Crossing()], max_attempts=1) as (log, store, engine):
        Crossing.failing = {parked_id, other_id} if other == "parked retry" else {parked_id}
        append_tenant_events(
            log,
            [
                (None, parked_id, "Paired", {"reads": [high, low]}),
                (None, other_id, "Paired", {"reads": [low, high]}),
            ],
        )
        engine.process(Lane(Crossing.name, "bank", 0))
        if other == "parked retry":
            engine.process(Lane(Crossing.name, "bank", 1))
        entries = {e.aggregate_id: e for e in engine.parked(Crossing.name)}
        Crossing.failing = set()
        if other == "parked retry":
            crossed: Callable[[], Any] = lambda: engine.retry(entries[other_id])  # noqa: E731
        else:
            crossed = lambda: engine.process(Lane(Crossing.name, "bank", 1))  # noqa: E731
        Crossing.barrier = threading.Barrier(2, timeout=10)
        Crossing.crossing = {f"bank:{parked_id}", f"bank:{other_id}"}
        with capture_logs() as logs:
            errors = _together(lambda: engine.retry(entries[parked_id]), crossed)
        assert Crossing.crossing == set()  # both met at the barrier: the locks did cross
        assert errors == []
        assert _deadlocks(logs) == []
        assert engine.parked(Crossing.name) == []
        assert _rows(log.engine) == {low: (2, None), high: (2, None)}


@pytest.mark.parametrize("other", ["live batch", "parked retry"])
def test_an_in_place_replay_batch_and_another_reading_rows_in_opposite_orders_do_not_deadlock(
    other: str, pg_database: Callable[[], str]
) -> None:
    """The replay re-applies a ``bank`` event while a ``shop`` batch (live, or a parked
    event's retry) reads the same rows in the opposite order: the replay holds the row after
    the other's, so the other waits and the replay starts its batch again."""
    low, high = _low_high()
    bank_id, shop_id = _in_partitions()
    shop_lane = Lane(Crossing.name, "shop", aggregate_hash("account", shop_id) % 2)
    with engine_on(pg_database(), [Crossing()], max_attempts=1) as (log, store, engine):
        append_tenant_events(log, [(None, bank_id, "Paired", {"reads": [high, low]})])
        engine.catch_up()
        append_tenant_events(log, [(None, shop_id, "Paired", {"reads": [low, high]})], "shop")
        if other == "parked retry":
            Crossing.failing = {shop_id}
            engine.process(shop_lane)
            Crossing.failing = set()
            [entry] = engine.parked(Crossing.name)
            shop: Callable[[], Any] = lambda: engine.retry(entry)  # noqa: E731
        else:
            shop = lambda: engine.process(shop_lane)  # noqa: E731
        replayer = Replayer(LogReader(log), Crossing(), store)
        Crossing.barrier = threading.Barrier(2, timeout=10)
        Crossing.crossing = {f"bank:{bank_id}", f"shop:{shop_id}"}
        with capture_logs() as logs:
            errors = _together(
                lambda: replayer.run(ReplayOptions(from_position=0, source="bank")), shop
            )
        assert Crossing.crossing == set()
        assert errors == []
        assert _deadlocks(logs) == []
        assert engine.parked(Crossing.name) == []
        rows = _rows(log.engine)
        assert rows == {low: (2, 1), high: (2, 1)}  # the bank event applied live, then replayed
