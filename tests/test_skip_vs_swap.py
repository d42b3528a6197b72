"""``readmodel parked skip`` racing a rebuild's swap on a PostgreSQL store, each race ordered
with real connections: the swap is held at one step (in its transaction) while another
thread runs the operator's skip, until that skip has finished or waits on a lock.

- The skip reaches an entry the swap has just settled (``replayed``), still uncommitted: it
  must not overwrite what the swap committed, and says the entry changed under it.
- The skip commits after the swap's last read of the skipped set, before it settles: the
  swap must not park the event again (the operator's skip wins), and the events held
  behind it are applied once the swap is done.

SQLite is not raced: the swap and the skip each begin with the one write lock (``BEGIN
IMMEDIATE``), so one runs wholly after the other. MongoDB neither: the skip is one
conditional update in a transaction, and the swap's transaction, writing an entry the skip
changed after the swap's snapshot, fails with a write conflict and is retried.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import projections.replay_rebuild as replay_rebuild
from outbox.errors import ReadmodelError
from projections.engine import ProjectionEngine
from projections.replay import Replayer
from projections.replay_types import ReplayOptions
from tests.operator_skip_helpers import (
    AMOUNTS,
    WITH_LATE,
    park_late_events,
    sql_rows,
    sql_skipped,
    statuses,
)

WAIT = 30.0  # seconds: the skip thread finishes or waits on a lock well within this


class Skip(threading.Thread):
    """``skip()`` (an operator's skip or retry, on its own connections); keeps what it
    returned or raised."""

    def __init__(self, skip: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.skip = skip
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.skip()
        except BaseException as exc:  # asserted by the test
            self.error = exc


def start_skip_and_wait(skip: Callable[[], Any], url: str) -> Skip:
    """Start ``skip``; return once it has finished or waits on a lock (held by the caller's
    transaction): a wait-until, not a sleep."""
    thread = Skip(skip)
    probe = sa.create_engine(url, poolclass=sa.pool.NullPool)
    waiting = sa.text(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE NOT l.granted AND a.datname = current_database()"
    )
    try:
        thread.start()
        deadline = time.monotonic() + WAIT
        while thread.is_alive():
            with probe.connect() as conn:
                if conn.execute(waiting).scalar_one():
                    break
            assert time.monotonic() < deadline, "the skip neither finished nor waited on a lock"
            time.sleep(0.02)
    finally:
        probe.dispose()
    return thread


@pytest.fixture
def pg_skipped(
    pg_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Any, Any, ProjectionEngine, Any]]:
    url = pg_database()
    with sql_skipped(url, monkeypatch) as (log, store, engine, projection):
        yield url, log, store, engine, projection


def entry_at(engine: ProjectionEngine, name: str, position: int) -> Any:
    (entry,) = [p for p in engine.parked(name) if (p.source, p.position) == ("shop", position)]
    return entry


def holds(store: Any) -> list[tuple[str, str, int]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT source, aggregate_id, since_position FROM rm_blocked_aggregates")
        )
        return sorted((r.source, r.aggregate_id, int(r.since_position)) for r in rows)


def test_a_skip_waiting_on_the_swaps_settle_does_not_overwrite_it(
    pg_skipped: tuple[str, Any, Any, ProjectionEngine, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, log, store, engine, projection = pg_skipped
    name = projection.name
    park_late_events(engine, log, name, monkeypatch)  # fixed: the rebuild applies shop:6
    entry = entry_at(engine, name, 6)  # read by the CLI before the swap
    threads: list[Skip] = []
    settle = replay_rebuild.settle_parked

    def settle_then_skip(*args: Any, **kw: Any) -> int:
        released = settle(*args, **kw)  # shop:6 and shop:7 replayed, not committed yet
        if not threads:
            threads.append(start_skip_and_wait(lambda: engine.skip(entry), url))
        return released

    monkeypatch.setattr(replay_rebuild, "settle_parked", settle_then_skip)
    Replayer(engine.reader, projection, store).run(ReplayOptions())
    (thread,) = threads
    thread.join(WAIT)
    assert not thread.is_alive()

    assert statuses(engine, name) == {
        "shop:2": "skipped",
        "shop:4": "retried",
        "shop:6": "replayed",
        "shop:7": "replayed",
    }
    assert isinstance(thread.error, ReadmodelError), thread.error
    assert f"e{entry.id} is no longer parked" in str(thread.error)
    assert "replayed" in str(thread.error)
    assert holds(store) == []
    assert sql_rows(store) == (sorted([*WITH_LATE, "shop:6"]), AMOUNTS)


def test_a_skip_committed_after_the_swaps_last_read_is_not_parked_again(
    pg_skipped: tuple[str, Any, Any, ProjectionEngine, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, log, store, engine, projection = pg_skipped
    name = projection.name
    park_late_events(engine, log, name, monkeypatch, fixed=False)  # shop:6 still fails
    entry = entry_at(engine, name, 6)
    threads: list[Skip] = []

    class SkipAfterTheLastRead(Replayer):
        def _reread_skips(self, conn: sa.Connection | None = None) -> None:
            super()._reread_skips(conn)
            if conn is not None and not threads:  # the swap's read, in its transaction
                threads.append(start_skip_and_wait(lambda: engine.skip(entry), url))

    summary = SkipAfterTheLastRead(engine.reader, projection, store).run(
        ReplayOptions(skip_errors=True)
    )
    (thread,) = threads
    thread.join(WAIT)
    assert not thread.is_alive()

    assert [(e.source, e.position) for e in summary.skipped] == [("shop", 6), ("shop", 7)]
    assert statuses(engine, name) == {
        "shop:2": "skipped",
        "shop:4": "retried",
        "shop:6": "skipped",
        "shop:7": "retried",
    }
    assert thread.error is None, thread.error
    assert thread.result == 1  # shop:7, held behind shop:6, applied after the skip
    assert holds(store) == []
    assert engine.parked(name) == []
    assert sql_rows(store) == (WITH_LATE, AMOUNTS)


def test_a_bulk_skip_committed_after_the_swaps_last_read_is_not_parked_again(
    pg_skipped: tuple[str, Any, Any, ProjectionEngine, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The set-based skip (``readmodel parked skip --projection``) in the same window."""
    url, log, store, engine, projection = pg_skipped
    name = projection.name
    park_late_events(engine, log, name, monkeypatch, fixed=False)
    entry = entry_at(engine, name, 6)
    threads: list[Skip] = []

    class SkipAfterTheLastRead(Replayer):
        def _reread_skips(self, conn: sa.Connection | None = None) -> None:
            super()._reread_skips(conn)
            if conn is not None and not threads:
                threads.append(start_skip_and_wait(lambda: store.skip_parked_many([entry.id]), url))

    SkipAfterTheLastRead(engine.reader, projection, store).run(ReplayOptions(skip_errors=True))
    (thread,) = threads
    thread.join(WAIT)
    assert not thread.is_alive()

    assert statuses(engine, name)["shop:6"] == "skipped"
    assert statuses(engine, name)["shop:7"] == "parked"  # held behind it: the bulk run retries
    assert thread.error is None and thread.result == 1
    assert holds(store) == [("shop", "a1", 6)]


def test_a_retry_waiting_on_the_swap_says_the_entry_was_settled(
    pg_skipped: tuple[str, Any, Any, ProjectionEngine, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``readmodel parked retry`` waits for the swap holding the lane, then finds nothing
    parked: it says so instead of 'applied 0 parked event(s)', and changes nothing."""
    url, log, store, engine, projection = pg_skipped
    name = projection.name
    park_late_events(engine, log, name, monkeypatch)
    entry = entry_at(engine, name, 6)
    threads: list[Skip] = []
    settle = replay_rebuild.settle_parked

    def settle_then_retry(*args: Any, **kw: Any) -> int:
        released = settle(*args, **kw)
        if not threads:
            threads.append(start_skip_and_wait(lambda: engine.retry(entry), url))
        return released

    monkeypatch.setattr(replay_rebuild, "settle_parked", settle_then_retry)
    Replayer(engine.reader, projection, store).run(ReplayOptions())
    (thread,) = threads
    thread.join(WAIT)
    assert not thread.is_alive()

    assert statuses(engine, name)["shop:6"] == "replayed"
    assert statuses(engine, name)["shop:7"] == "replayed"
    assert isinstance(thread.error, ReadmodelError), (thread.error, thread.result)
    assert str(thread.error) == (
        f"e{entry.id} is no longer parked (it is replayed now: it changed while being "
        "retried); nothing was retried"
    )
    assert holds(store) == []
    assert sql_rows(store) == (sorted([*WITH_LATE, "shop:6"]), AMOUNTS)
