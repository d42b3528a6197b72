"""A blue/green rebuild in batches of any size, each read from the log in parts of any size:
what a handler reads across a batch or part boundary (rows made from some of their columns,
deleted and made again, counted with ``tx.find``), and what a write refused or a handler
failing a few batches or parts in, or an interruption, leaves is what the events say (an
independent model of them), with no thread or transaction left open."""

from __future__ import annotations

from typing import Any

import pytest

from projections import replay as replay_module
from projections import replay_fill
from projections.replay import ReplayError, ReplayHooks
from tests.replay_batch_helpers import (
    FailingTally,
    TallyModel,
    flips,
    items,
    left_behind,
    notes,
    replay,
    rows,
    shadow,
    with_boom,
)

__all__ = ["shadow"]  # the fixture


@pytest.mark.parametrize(
    ("batch", "read"), [(3, None), (7, None), (1000, None), (None, None), (7, 2), (50, 3)]
)
def test_rows_read_across_batch_boundaries(shadow: Any, batch: int | None, read: int) -> None:
    # Rows made from some of their columns (the table's default fills the state), read by
    # later batches; rows deleted, read missing and made again; find() counting rows that
    # earlier batches made: every batch size, and every size of the parts a batch is read
    # in, gives what the events say.
    events = flips(120, seed=5)
    log = shadow(events)
    summary = replay(log, batch, read=read)
    model = TallyModel(events)
    assert summary.events == len(events)
    assert rows(log, items) == model.items
    assert rows(log, notes) == model.notes


@pytest.mark.parametrize(("batch", "read"), [(5, None), (40, 3), (None, None)])
def test_a_refused_write_stops_the_replay_at_its_event(
    shadow: Any, batch: int | None, read: int | None
) -> None:
    # A name its CHECK constraint refuses is refused at the write of its batch, after
    # batches that wrote (or parts of its own batch): the replay stops with that event,
    # nothing left open.
    events = flips(60, seed=3, bad_at=31, overlapped=True)
    log = shadow(events)
    with pytest.raises(ReplayError) as raised:
        replay(log, batch, read=read)
    assert raised.value.event.position == 32
    assert left_behind(log) == ([], [])
    assert rows(log, items) == {}  # the live tables are as they were (empty)


@pytest.mark.parametrize(("batch", "read"), [(5, None), (40, 3), (None, None)])
def test_a_refused_write_is_skipped_with_skip_errors(
    shadow: Any, batch: int | None, read: int | None
) -> None:
    events = flips(60, seed=3, bad_at=31, overlapped=True)
    log = shadow(events)
    summary = replay(log, batch, read=read, skip_errors=True)
    model = TallyModel(events, skip=32)
    assert [e.position for e in summary.skipped] == model.skipped_positions
    assert rows(log, items) == model.items
    assert rows(log, notes) == model.notes
    assert left_behind(log) == ([], [])


@pytest.mark.parametrize(("batch", "read"), [(40, 3), (None, None)])
def test_a_failing_handler_parts_into_its_batch_stops_thereplay(
    shadow: Any, batch: int | None, read: int | None
) -> None:
    # The handler fails in the fourth part its batch read (or in the one part): the replay
    # stops with that event, the batches before it written to the shadow only.
    events = with_boom(flips(80, seed=4), at=50)
    log = shadow(events)
    with pytest.raises(ReplayError) as raised:
        replay(log, batch, read=read, projection=FailingTally())
    assert raised.value.event.position == 51
    assert "boom" in str(raised.value)
    assert left_behind(log) == ([], [])
    assert rows(log, items) == {}


@pytest.mark.parametrize(("batch", "read"), [(40, 3), (None, None)])
def test_a_failing_handler_parts_into_its_batch_is_skipped_with_its_item(
    shadow: Any, batch: int | None, read: int | None
) -> None:
    events = with_boom(flips(80, seed=4), at=50)
    log = shadow(events)
    summary = replay(log, batch, read=read, projection=FailingTally(), skip_errors=True)
    model = TallyModel(events, skip=51)
    assert [e.position for e in summary.skipped] == model.skipped_positions
    assert model.skipped_positions[0] == 51 and len(model.skipped_positions) > 1
    assert summary.events == len(events) - len(model.skipped_positions)
    assert rows(log, items) == model.items
    assert rows(log, notes) == model.notes
    assert left_behind(log) == ([], [])


def test_a_refused_write_is_narrowed_down_by_halves(shadow: Any) -> None:
    # One batch of 64 events whose write is refused: its halves are applied apart, down to
    # the event, not each event in a transaction of its own (progress reports one commit
    # each: 64 one by one).
    events = flips(64, seed=3, bad_at=40, overlapped=True)
    log = shadow(events)
    commits = _Commits()
    summary = replay(log, 64, hooks=commits, skip_errors=True)
    model = TallyModel(events, skip=41)
    assert [e.position for e in summary.skipped] == model.skipped_positions
    assert rows(log, items) == model.items
    assert 2 <= commits.calls <= 12
    assert commits.positions == sorted(commits.positions)
    assert commits.positions[-1] == 64


class _Commits(ReplayHooks):
    def __init__(self) -> None:
        self.calls = 0
        self.positions: list[int] = []

    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        self.calls += 1
        self.positions.append(position)


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
        replay(log, 4, hooks=_Interrupt(after=3))
    assert left_behind(log) == ([], [])
    assert rows(log, items) == {}
    summary = replay(log, 4)  # the next replay starts over and completes
    assert summary.events == len(events)
    assert rows(log, items) == TallyModel(events).items


def test_ctrl_c_in_a_handler_parts_into_a_batch_leaves_its_shadow_as_committed(
    shadow: Any,
) -> None:
    # Ctrl-C while the handlers of a batch's third part run: the batch rolls back, the
    # log reader stops, the shadow keeps the batches committed before (its checkpoint says
    # so), the live tables are untouched; the next replay starts over and completes.
    events = with_boom(flips(100, seed=6), at=70, interrupt=True)
    log = shadow(events)
    with pytest.raises(KeyboardInterrupt):
        replay(log, 30, read=4, projection=FailingTally())
    assert left_behind(log) == ([], [])
    assert rows(log, items) == {}
    with log.engine.connect() as conn:
        shadow_checkpoint = conn.exec_driver_sql(
            "SELECT DISTINCT position FROM rm_checkpoints WHERE projection = 'pipe_tally__rebuild'"
        ).scalar_one()
    assert shadow_checkpoint == 56  # two transactions of 28: 7 parts of 4 (8 pass 30)
    summary = replay(log, 30, read=4)  # a projection without the Boom handler
    kept = [event for event in events if event[1] != "Boom"]
    assert summary.events == len(kept)
    assert rows(log, items) == TallyModel(kept).items


class _Committed(ReplayHooks):
    """The shadow's committed checkpoint, read apart at each progress report."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.seen: list[int] = []

    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        with self.log.engine.connect() as conn:
            self.seen.append(
                conn.exec_driver_sql(
                    "SELECT max(position) FROM rm_checkpoints "
                    "WHERE projection = 'pipe_tally__rebuild'"
                ).scalar_one()
            )


def test_no_transaction_passes_the_batch_size(shadow: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Parts of at most 50 (here) read for transactions of 70: two equal parts of 35, so
    # every transaction is 70 events (parts of 50 made them 100).
    monkeypatch.setattr(replay_fill, "FILL_READ_SIZE", 50)
    monkeypatch.setattr(replay_module, "FILL_READ_SIZE", 50)
    events = flips(300, seed=8)
    log = shadow(events)
    committed = _Committed(log)
    summary = replay(log, 70, hooks=committed)
    assert summary.events == len(events)
    # None: after the swap, which removes the shadow's checkpoints; 300: the log's end.
    assert set(committed.seen) - {None} == {0, 70, 140, 210, 280, 300}, committed.seen
