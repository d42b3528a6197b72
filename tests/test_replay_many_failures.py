"""A rebuild with ``--skip-errors`` through a log where many events of one transaction fail
(a handler bug hitting every event of some kind): each is skipped with its aggregate, the
others applied; the replay does not nest deeper with each failure (it had: one level per
failure, a ``RecursionError`` past a thousand in one transaction), and each skipped event's
traceback is its own (it had chained every earlier failure's, so the tracebacks of a long
replay grew with each failure and their formatting took seconds each). Tables on
PostgreSQL and documents on a MongoDB-wire server."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any

from outbox.envelope import Envelope
from projections.api import Event, Tx, on
from projections.replay_types import ReplayOptions, ReplaySummary
from tests.document_fixtures import DocTotals
from tests.document_replay_helpers import Docs, deposits, docs, totals
from tests.replay_batch_helpers import (
    SOURCE,
    TallyModel,
    TallyProjection,
    flips,
    items,
    left_behind,
    replay,
    rows,
    shadow,
)

__all__ = ["docs", "shadow"]  # the fixtures


def _depth() -> int:
    frame, depth = sys._getframe(1), 0
    while frame is not None:
        depth += 1
        frame = frame.f_back
    return depth


class _FailingTally(TallyProjection):
    depths: list[int]
    prefetched: list[int]

    def prefetch(self, events: Sequence[Envelope], tx: Tx) -> None:
        self.prefetched.append(len(events))

    @on(SOURCE, "Boom")
    def boom(self, event: Event[dict[str, Any]], tx: Tx) -> None:
        self.depths.append(_depth())
        raise ValueError(f"boom {event.aggregate_id}")


class _FailingTotals(DocTotals):
    depths: list[int]
    prefetched: list[int]

    def prefetch(self, events: Sequence[Envelope], tx: Any) -> None:
        self.prefetched.append(len(events))

    @on("bank", "Boom")
    def boom(self, event: Event[dict[str, Any]], tx: Any) -> None:
        self.depths.append(_depth())
        raise ValueError(f"boom {event.aggregate_id}")


def _with_booms(events: list[Any], every: int, count: int) -> tuple[list[Any], list[int]]:
    """``events`` with ``count`` failing events of aggregates of their own (``b0``, ``b1``,
    ...), one after each ``every`` of them; and their positions."""
    mixed: list[Any] = []
    booms: list[int] = []
    rest = iter(events)
    for k in range(count):
        mixed += [next(rest) for _ in range(every)]
        mixed.append((f"b{k}", "Boom", {}))
        booms.append(len(mixed))
    mixed += list(rest)
    return mixed, booms


def _assert_skipped_alone(summary: ReplaySummary, booms: list[int], depths: list[int]) -> None:
    assert sorted(e.position for e in summary.skipped) == booms
    for skipped in summary.skipped:
        assert skipped.detail is not None
        mentioned = re.findall(r"boom b\d+", skipped.detail)
        assert mentioned == [f"boom {skipped.aggregate_id}"], skipped.detail[-600:]
        assert "followed by" not in skipped.detail
    # The first failure is met in the whole transaction, all later ones a level further in.
    assert len(depths) >= len(booms)
    assert len(set(depths[1:])) == 1, (min(depths), max(depths))


def _table_rebuild(shadow: Any, n: int, seed: int, every: int, count: int) -> tuple:
    """A rebuild skipping errors of ``n`` events with ``count`` failing ones among them;
    checks the model. Returns the projection, the summary and the failing positions."""
    events, booms = _with_booms(flips(n, seed=seed), every=every, count=count)
    log = shadow(events)
    projection = _FailingTally()
    projection.depths, projection.prefetched = [], []
    summary = replay(log, None, projection=projection, skip_errors=True)
    kept = [event for position, event in enumerate(events, start=1) if position not in booms]
    assert rows(log, items) == TallyModel(kept).items
    assert summary.events == len(kept)
    assert left_behind(log) == ([], [])
    return projection, summary, booms, len(events)


def _document_rebuild(docs: Docs, n: int, seed: int, every: int, count: int) -> tuple:
    """The same of documents (one transaction: ``batch`` past the events)."""
    paid = deposits(n, 6, seed=seed)
    events, booms = _with_booms(paid, every=every, count=count)
    docs.feed(events, apply=False)
    projection = _FailingTotals()
    projection.depths, projection.prefetched = [], []
    docs.projections["doc_totals"] = projection
    summary = docs.replayer(batch=len(events)).run(ReplayOptions(skip_errors=True))
    assert docs.totals() == totals(paid)
    assert summary.events == len(paid)
    return projection, summary, booms, len(events)


def _spread(projection: Any, size: int, booms: list[int]) -> None:
    """Spread-out failures cost work in proportion to the log, not to the failures times the
    transaction: each range's prefetch reads the rows its events name, and ranges running
    to the batch's end after each skipped event read ~half the batch per failure (here 41
    and 102 times the events, against ~5 times now)."""
    assert sum(projection.prefetched) <= 8 * size, (
        len(projection.prefetched),
        sum(projection.prefetched),
    )
    assert len(projection.prefetched) <= 12 * len(booms)


def test_a_table_rebuild_skips_many_failures_of_one_transaction_each_alone(shadow: Any) -> None:
    projection, summary, booms, _ = _table_rebuild(shadow, 400, seed=5, every=1, count=300)
    _assert_skipped_alone(summary, booms, projection.depths)


def test_a_document_rebuild_skips_many_failures_of_one_transaction_each_alone(
    docs: Docs,
) -> None:
    projection, summary, booms, _ = _document_rebuild(docs, 120, seed=8, every=2, count=40)
    _assert_skipped_alone(summary, booms, projection.depths)


def test_spread_failures_cost_a_table_rebuild_work_bounded_by_the_log(shadow: Any) -> None:
    projection, summary, booms, size = _table_rebuild(shadow, 3000, seed=6, every=30, count=100)
    assert sorted(e.position for e in summary.skipped) == booms
    _spread(projection, size, booms)


def test_spread_failures_cost_a_document_rebuild_work_bounded_by_the_log(docs: Docs) -> None:
    projection, summary, booms, size = _document_rebuild(docs, 1200, seed=9, every=30, count=40)
    assert sorted(e.position for e in summary.skipped) == booms
    _spread(projection, size, booms)
