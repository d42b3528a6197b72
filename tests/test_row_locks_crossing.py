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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from outbox.envelope import aggregate_hash
from projections import row_locks
from projections.api import Event, Projection, Tx, on
from projections.invalidations import WHOLE_PROJECTION
from projections.log_reader import LogReader
from projections.redis_cache import RedisCache
from projections.replay import Replayer
from projections.replay_types import ReplayHooks, ReplayOptions
from projections.sql_tx import row_lock_key
from projections.store import HandlerFailed, Lane
from tests.cache_helpers import dead_redis_url, fresh_prefix
from tests.projection_fixtures import append_tenant_events, engine_on

MEETING_TIMEOUT = 60
"""Seconds a side waits at the barrier for the other before the test fails: a bound, not a
synchronisation (a replay's planning on 2 shared, loaded cores can take seconds)."""

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
    swallow: ClassVar[bool] = False
    failing_at: ClassVar[set[str]] = set()
    failing_again: ClassVar[set[str]] = set()
    """Aggregates whose event fails once it met the barrier (when started again)."""

    @on("bank", "Paired")
    def bank(self, event: Event[dict], tx: Tx) -> None:
        self._paired(event, tx)

    @on("shop", "Paired")
    def shop(self, event: Event[dict], tx: Tx) -> None:
        self._paired(event, tx)

    def _paired(self, event: Event[dict], tx: Tx) -> None:
        at = f"{event.source}:{event.position}"
        if event.aggregate_id in self.failing or at in self.failing_at:
            raise RuntimeError("not yet")
        first, second = event.payload["reads"]
        meeting = f"{event.source}:{event.aggregate_id}"
        if event.aggregate_id in self.failing_again and meeting not in self.crossing:
            raise RuntimeError("failing again")
        rows = [tx.get(seen, first)]
        if self.barrier is not None and meeting in self.crossing:
            self.crossing.discard(meeting)
            self.barrier.wait()
        try:
            rows.append(tx.get(seen, second))
        except Exception:  # a user's broad except: the OutOfOrder must still restart
            if not self.swallow:
                raise
            rows.append(None)
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
    Crossing.swallow = False
    Crossing.failing_again = set()
    yield
    Crossing.barrier = None


def _rows(engine: sa.Engine) -> dict[str, tuple[int | None, int | None]]:
    with engine.connect() as conn:
        return {c: (b, s) for c, b, s in conn.execute(sa.select(seen)).all()}


def _deadlocks(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if "deadlock" in e["event"]]


@dataclass
class _Crossed:
    """What :func:`_parked_retry_crossing` leaves to assert, its engine still open."""

    low: str
    high: str
    log: Any
    engine: Any
    entry: Any
    """The parked event retried."""
    errors: list[BaseException]
    logs: list[dict[str, Any]]


@contextmanager
def _parked_retry_crossing(
    dsn: str, *, other: str = "live batch", swallow: bool = False, fails_again: bool = False
) -> Iterator[_Crossed]:
    """A ``bank`` event parked in lane 0, reading the rows high then low, is retried while
    ``other`` (a live batch of lane 1, or the retry of an event parked there) reads them
    low then high; both meet at the barrier, so the locks did cross. With ``swallow`` the
    handlers catch their OutOfOrder themselves; with ``fails_again`` the retried event
    fails once started again."""
    low, high = _low_high()
    parked_id, other_id = _in_partitions()
    with engine_on(dsn, [Crossing()], max_attempts=1) as (log, store, engine):
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
        assert len(entries) == len(Crossing.failing)  # each failing event parked, once
        Crossing.failing = set()
        Crossing.swallow = swallow
        Crossing.failing_again = {parked_id} if fails_again else set()
        if other == "parked retry":
            crossed: Callable[[], Any] = lambda: engine.retry(entries[other_id])  # noqa: E731
        else:
            crossed = lambda: engine.process(Lane(Crossing.name, "bank", 1))  # noqa: E731
        Crossing.barrier = threading.Barrier(2, timeout=MEETING_TIMEOUT)
        Crossing.crossing = {f"bank:{parked_id}", f"bank:{other_id}"}
        with capture_logs() as logs:
            errors = _together(lambda: engine.retry(entries[parked_id]), crossed)
        assert Crossing.crossing == set()  # both met at the barrier: the locks did cross
        yield _Crossed(low, high, log, engine, entries[parked_id], errors, logs)


@pytest.mark.parametrize("other", ["live batch", "parked retry"])
def test_a_parked_retry_and_another_reading_rows_in_opposite_orders_do_not_deadlock(
    other: str, pg_database: Callable[[], str]
) -> None:
    """The retry holds the row after (in lock order) the one the other (a live batch of
    another lane, or the retry of a parked event there) holds, and each wants the other's:
    the other waits, so the retry must not (it starts again)."""
    with _parked_retry_crossing(pg_database(), other=other) as crossed:
        assert crossed.errors == []
        assert _deadlocks(crossed.logs) == []
        assert crossed.engine.parked(Crossing.name) == []
        low, high = crossed.low, crossed.high
        assert _rows(crossed.log.engine) == {low: (2, None), high: (2, None)}


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
        Crossing.barrier = threading.Barrier(2, timeout=MEETING_TIMEOUT)
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


class _Progress(ReplayHooks):
    def __init__(self) -> None:
        self.reports: list[tuple[str, int]] = []

    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        self.reports.append((source, applied))


@pytest.mark.parametrize("crossing_first", [False, True])
@pytest.mark.parametrize("swallow", [False, True])
def test_an_in_place_batch_started_again_counts_skips_and_journals_once(
    swallow: bool, crossing_first: bool, pg_database: Callable[[], str]
) -> None:
    """With ``--skip-errors``, a batch with two failing events of one aggregate is
    started again by a crossing, before or after the failure was skipped (the handler
    catching the OutOfOrder itself, too: a later event's failure then starts it again as
    well): the skipped events are listed once, the applied events counted once, and one
    whole-projection invalidation is journaled per committed transaction (a restarted
    attempt's is rolled back)."""
    low, high = _low_high()
    bank_id, shop_id = _in_partitions()
    fail_id = "f1"
    shop_lane = Lane(Crossing.name, "shop", aggregate_hash("account", shop_id) % 2)
    with engine_on(pg_database(), [Crossing()], max_attempts=1) as (log, store, engine):
        failing = [(None, fail_id, "Paired", {"reads": ["x1", "x2"]})] * 2
        crossing = [(None, bank_id, "Paired", {"reads": [high, low]})]
        append_tenant_events(log, crossing + failing if crossing_first else failing + crossing)
        engine.catch_up()
        append_tenant_events(log, [(None, shop_id, "Paired", {"reads": [low, high]})], "shop")
        store.journal_invalidations = True
        dead = RedisCache(dead_redis_url(), key_prefix=fresh_prefix(), timeout=0.05)
        progress = _Progress()
        replayer = Replayer(LogReader(log), Crossing(), store, cache=dead, hooks=progress)
        Crossing.failing = {fail_id}
        Crossing.swallow = swallow
        Crossing.barrier = threading.Barrier(2, timeout=MEETING_TIMEOUT)
        Crossing.crossing = {f"bank:{bank_id}", f"shop:{shop_id}"}
        summaries: list[Any] = []
        options = ReplayOptions(from_position=0, source="bank", skip_errors=True)
        try:
            with capture_logs() as logs:
                errors = _together(
                    lambda: summaries.append(replayer.run(options)),
                    lambda: engine.process(shop_lane),
                )
        finally:
            dead.close()
        assert Crossing.crossing == set()
        assert errors == []
        assert _deadlocks(logs) == []
        assert any("in order" in e["event"] for e in logs)  # it was started again
        [summary] = summaries
        first = 2 if crossing_first else 1
        assert [(s.aggregate_id, s.position, s.held_behind) for s in summary.skipped] == [
            (fail_id, first, None),
            (fail_id, first + 1, None),  # in place, each failing event is skipped alone
        ]
        assert summary.applied == {"bank": 1}
        # The events before a failing event are applied first, in a transaction of their own
        # (a write refused among them would come first): one report each, the applied event
        # counted once, and one invalidation journaled per committed transaction.
        assert progress.reports[-1] == ("bank", 1)  # counted so far: the one event
        pending = [i for i in store.pending_invalidations() if i.tags == (WHOLE_PROJECTION,)]
        assert len(pending) == len(progress.reports)  # none of a restart
        assert _rows(log.engine) == {
            low: (2, 1),
            high: (2, 1),
            "x1": (2, None),
            "x2": (2, None),
        }


def test_a_parked_retry_whose_handler_catches_the_out_of_order_starts_again(
    pg_database: Callable[[], str],
) -> None:
    """The retry's handler catches the OutOfOrder of its second read itself (a broad
    ``except``) and writes on: the retry must not commit that, but start again."""
    with _parked_retry_crossing(pg_database(), swallow=True) as crossed:
        assert crossed.errors == []
        assert any("in order" in e["event"] for e in crossed.logs)
        assert crossed.engine.parked(Crossing.name) == []
        low, high = crossed.low, crossed.high
        assert _rows(crossed.log.engine) == {low: (2, None), high: (2, None)}


def test_past_the_restarts_a_retry_waits_in_any_order_and_the_deadlock_check_backs_it_up(
    pg_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no ordered attempt left (``RESTARTS`` 0), the crossing is a real deadlock:
    PostgreSQL aborts one side, which is retried, and both still apply once."""
    monkeypatch.setattr(row_locks, "RESTARTS", 0)
    with _parked_retry_crossing(pg_database()) as crossed:
        assert crossed.errors == []
        assert len(_deadlocks(crossed.logs)) == 1
        assert crossed.engine.parked(Crossing.name) == []
        low, high = crossed.low, crossed.high
        assert _rows(crossed.log.engine) == {low: (2, None), high: (2, None)}


def test_a_parked_retry_started_again_that_fails_records_one_failed_retry(
    pg_database: Callable[[], str],
) -> None:
    """The retry is started again by a crossing, then its handler fails: the retry raises
    HandlerFailed (``readmodel parked retry`` exits 1) and counts one more attempt, once."""
    with _parked_retry_crossing(pg_database(), fails_again=True) as crossed:
        assert [type(e) for e in crossed.errors] == [HandlerFailed]
        assert "failing again" in str(crossed.errors[0])
        assert any("in order" in e["event"] for e in crossed.logs)
        [again] = crossed.engine.parked(Crossing.name)
        assert again.attempts == crossed.entry.attempts + 1
        assert "failing again" in again.reason
        low, high = crossed.low, crossed.high
        assert _rows(crossed.log.engine) == {low: (1, None), high: (1, None)}


def test_an_in_place_batch_started_again_after_an_event_merged_tenants_holds(
    pg_database: Callable[[], str],
) -> None:
    """Two tenants' events of one aggregate id fail (``--skip-errors``), a later event of it
    names no tenant, and then a crossing starts the batch again: the second attempt applies
    the events between and after the two failures again, as the first did (in place each
    failing event is skipped alone: no hold, merged or not, keeps the later ones back)."""
    low, high = _low_high()
    bank_id, shop_id = _in_partitions()
    shop_lane = Lane(Crossing.name, "shop", aggregate_hash("account", shop_id) % 2)
    with engine_on(pg_database(), [Crossing()], max_attempts=1) as (log, store, engine):
        reads = {"reads": ["x1", "x2"]}
        append_tenant_events(
            log,
            [
                ("acme", "o1", "Paired", reads),  # 1: fails
                ("globex", "o1", "Paired", reads),  # 2: applied again
                ("globex", "o1", "Paired", reads),  # 3: fails
                (None, "o1", "Paired", reads),  # 4: held, merging the holds
                (None, bank_id, "Paired", {"reads": [high, low]}),  # 5: crosses
            ],
        )
        engine.catch_up()
        append_tenant_events(log, [(None, shop_id, "Paired", {"reads": [low, high]})], "shop")
        replayer = Replayer(LogReader(log), Crossing(), store)
        Crossing.failing_at = {"bank:1", "bank:3"}
        Crossing.barrier = threading.Barrier(2, timeout=MEETING_TIMEOUT)
        Crossing.crossing = {f"bank:{bank_id}", f"shop:{shop_id}"}
        summaries: list[Any] = []
        options = ReplayOptions(from_position=0, source="bank", skip_errors=True)
        with capture_logs() as logs:
            errors = _together(
                lambda: summaries.append(replayer.run(options)),
                lambda: engine.process(shop_lane),
            )
        assert Crossing.crossing == set()
        assert errors == []
        assert any("in order" in e["event"] for e in logs)
        [summary] = summaries
        assert [(s.position, s.held_behind) for s in summary.skipped] == [(1, None), (3, None)]
        assert summary.applied == {"bank": 3}
        assert _rows(log.engine)["x1"] == (6, None)  # 4 applied live, the 2nd and 4th again
