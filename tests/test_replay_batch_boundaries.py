"""A blue/green rebuild in batches of any size: what a handler reads across a batch boundary
(rows made from some of their columns, deleted and made again, counted with ``tx.find``),
and what a write refused a few batches in or an interruption leaves, is what the events say
(an independent model of them), with no thread or transaction left open."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from projections.replay import Replayer, ReplayError, ReplayHooks, ReplayOptions
from tests.replay_batch_helpers import (
    TallyModel,
    TallyProjection,
    flips,
    items,
    notes,
    shadow_log,
)


@pytest.fixture
def shadow(pg_database: Callable[[], str]) -> Iterator[Callable[[list[Any]], Any]]:
    made: list[Any] = []

    def make(events: list[Any]) -> Any:
        made.append(shadow_log(pg_database(), events))
        return made[-1]

    yield make
    for log in made:
        log.close()


def _rows(log: Any, table: sa.Table) -> dict[str, dict[str, Any]]:
    with log.engine.connect() as conn:
        return {row[0]: dict(row._mapping) for row in conn.execute(sa.select(table))}


def _replay(log: Any, batch: int, hooks: ReplayHooks | None = None, **options: Any) -> Any:
    replayer = Replayer(log.reader, TallyProjection(), log.store, hooks=hooks, batch_size=batch)
    return replayer.run(ReplayOptions(**options))


def _left_behind(log: Any) -> tuple[list[str], list[str]]:
    """The replay's threads alive, and this database's sessions idle in a transaction."""
    threads = [t.name for t in threading.enumerate() if t.name.startswith("replay")]
    with log.engine.connect() as conn:
        open_tx = conn.exec_driver_sql(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
            "AND state IN ('idle in transaction', 'idle in transaction (aborted)')"
        )
        return threads, [row[0] for row in open_tx]


@pytest.mark.parametrize("batch", [3, 7, 1000])
def test_rows_read_across_batch_boundaries(shadow: Any, batch: int) -> None:
    # Rows made from some of their columns (the table's default fills the state), read by
    # later batches; rows deleted, read missing and made again; find() counting rows that
    # earlier batches made: every batch size gives what the events say.
    events = flips(120, seed=5)
    log = shadow(events)
    summary = _replay(log, batch)
    model = TallyModel(events)
    assert summary.events == len(events)
    assert _rows(log, items) == model.items
    assert _rows(log, notes) == model.notes


def test_a_refused_write_stops_the_replay_at_its_event(shadow: Any) -> None:
    # A name its CHECK constraint refuses is refused at the write of its batch, after
    # batches that wrote: the replay stops with that event, nothing left open.
    events = flips(60, seed=3, bad_at=31, overlapped=True)
    log = shadow(events)
    with pytest.raises(ReplayError) as raised:
        _replay(log, 5)
    assert raised.value.event.position == 32
    assert _left_behind(log) == ([], [])
    assert _rows(log, items) == {}  # the live tables are as they were (empty)


def test_a_refused_write_is_skipped_with_skip_errors(shadow: Any) -> None:
    events = flips(60, seed=3, bad_at=31, overlapped=True)
    log = shadow(events)
    summary = _replay(log, 5, skip_errors=True)
    model = TallyModel(events, skip=32)
    assert [e.position for e in summary.skipped] == model.skipped_positions
    assert _rows(log, items) == model.items
    assert _rows(log, notes) == model.notes
    assert _left_behind(log) == ([], [])


class _Interrupt(ReplayHooks):
    def __init__(self, after: int) -> None:
        self.after = after
        self.calls = 0

    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        self.calls += 1
        if self.calls == self.after:
            raise KeyboardInterrupt


def test_interrupted_rebuild_leaves_no_thread_nor_transaction(shadow: Any) -> None:
    events = flips(120, seed=9)
    log = shadow(events)
    with pytest.raises(KeyboardInterrupt):
        _replay(log, 4, hooks=_Interrupt(after=3))
    assert _left_behind(log) == ([], [])
    assert _rows(log, items) == {}
    summary = _replay(log, 4)  # the next replay starts over and completes
    assert summary.events == len(events)
    assert _rows(log, items) == TallyModel(events).items
