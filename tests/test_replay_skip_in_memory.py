"""A rebuild with ``--skip-errors`` skips a failed handler's event inside its transaction:
the handler's writes are taken back in memory (:meth:`SqlTx.undo`), its aggregate held from
there on, and the transaction goes on. It had rolled the transaction back and applied the
events before the failure again: every handler before it ran twice (a rebuild's transaction
is up to 100,000 events), each failure cost three or four transactions. Where the writes
cannot be taken back in memory (a flush inside the handler sent some of them, or the
handler's own failed query aborted the PostgreSQL transaction), it rolls back as before.
The rows left are what the events say either way (PostgreSQL; the same tally as
tests/test_replay_batch_boundaries.py)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from projections.api import Event, Tx, on
from tests.replay_batch_helpers import (
    SOURCE,
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


class _CountingTally(FailingTally):
    """Counts the handler runs of each position; its ``Boom`` writes a row, touches another
    item's row and adds a cache tag before it fails, and with ``flush`` in its payload reads
    with ``tx.find`` (a flush) after its writes, with ``find_first`` before them, with
    ``abort`` runs a query of its own that fails."""

    def __init__(self) -> None:
        self.runs: Counter[int] = Counter()

    def handle(self, envelope: Any, tx: Tx) -> bool:
        self.runs[envelope.position] += 1
        return super().handle(envelope, tx)

    @on(SOURCE, "Boom")
    def boom(self, event: Event[dict[str, Any]], tx: Tx) -> None:
        if event.payload.get("find_first"):
            tx.find(items, name="boom")  # sends only the earlier events' writes
        tx.upsert(items, {"item_id": event.aggregate_id, "name": "boom", "count": 0})
        other = tx.get(items, "i1")
        if other is not None:
            tx.upsert(items, {**other, "count": other["count"] + 1000})
        tx.delete(notes, "i2")
        tx.invalidate("boom:tag")
        if event.payload.get("flush"):
            tx.find(items, name="boom")
        if event.payload.get("abort"):
            try:
                tx.conn.exec_driver_sql("SELECT 1/0")  # type: ignore[attr-defined]
            except sa.exc.DBAPIError:
                pass  # caught: the transaction is aborted all the same
        raise ValueError("boom")


def _rebuilt(shadow: Any, **boom: Any) -> Counter[int]:
    """Rebuild the tally with two failing ``Boom`` events (``boom``: their payload), check
    rows and skipped events against the model; returns the handler runs per position."""
    events = flips(120, seed=7)
    events = with_boom(with_boom(events, at=90, item="i5", **boom), at=40, item="i4", **boom)
    log = shadow(events)
    projection = _CountingTally()
    summary = replay(log, None, projection=projection, skip_errors=True)
    model = TallyModel(events, skip=[41, 92])
    assert [e.position for e in summary.skipped] == model.skipped_positions
    assert rows(log, items) == model.items
    assert rows(log, notes) == model.notes
    assert left_behind(log) == ([], [])
    return projection.runs


def test_a_skipped_event_is_taken_back_in_memory_each_handler_runs_once(shadow: Any) -> None:
    runs = _rebuilt(shadow)
    assert set(runs.values()) == {1}, runs  # none ran twice


def test_a_find_before_the_failing_handlers_writes_leaves_them_undoable(shadow: Any) -> None:
    runs = _rebuilt(shadow, find_first=True)  # the flush sent earlier events' writes only
    assert set(runs.values()) == {1}, runs


@pytest.mark.parametrize("how", ["flush", "abort"])
def test_writes_a_flush_sent_or_an_aborted_transaction_roll_back_as_before(
    shadow: Any, how: str
) -> None:
    runs = _rebuilt(shadow, **{how: True})
    assert runs[1] == 2  # the transaction was rolled back and applied again
