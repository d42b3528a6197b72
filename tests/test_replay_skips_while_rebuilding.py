"""An event an operator skips (``readmodel parked skip``) while a replay runs is left out of
it if the replay had not applied it yet: the skipped set is read again before each pass of a
rebuild over the log, in the swap's transaction under the live lanes' locks, and in place in
each batch's transaction. An event a rebuild applied before the skip stays in the rebuilt
model, its entry marked ``replayed``. On PostgreSQL and SQLite stores, and a MongoDB
document store.

Before, the set was read once when the replay started: an event parked live meanwhile and
skipped by the operator, its handler since fixed, was applied by the rebuild's later passes
or by the swap's catch-up, and its entry marked ``replayed``: the swapped-in model held an
event the operator skipped. In place, an event parked when the replay started (its
aggregate held) and skipped meanwhile was applied to the live model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from outbox.log import EventLog
from projections.document_replay import DocumentReplayer
from projections.engine import ProjectionEngine
from projections.mongo_store import MongoStore
from projections.replay import Replayer
from projections.replay_types import ReplayOptions
from projections.store import Lane
from tests.operator_skip_fixtures import EVENTS, LIVE, OpSkipDocs
from tests.operator_skip_helpers import (
    AMOUNTS,
    LATE,
    WITH_LATE,
    Once,
    doc_rows,
    park_late_events,
    sql_rows,
    sql_skipped,
    statuses,
)
from tests.projection_fixtures import append_events

BATCHES = [
    pytest.param(None, id="in-the-swap"),  # one pass, then the swap's catch-up applies them
    pytest.param(1, id="in-a-later-pass"),  # more passes: the next one applies them
]


def skip_a_late_event(
    engine: ProjectionEngine, log: EventLog, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the rebuild runs: LATE is logged, shop:6 fails live and is parked (shop:7 held
    behind it), the operator skips it (shop:7 applied live); then its handler is fixed, so a
    rebuild that meets shop:6 applies it."""
    monkeypatch.setenv("READMODEL_TEST_POISON", "1")
    append_events(log, LATE, "shop", "account", after=len(EVENTS))
    engine.catch_up(deadline=30)
    late = [p for p in engine.parked(name) if (p.source, p.position) == ("shop", 6)]
    assert len(late) == 1, engine.parked(name)
    assert engine.skip(late[0]) == 1
    monkeypatch.delenv("READMODEL_TEST_POISON")


@pytest.mark.parametrize("batch_size", BATCHES)
def test_an_event_skipped_during_a_rebuild_before_it_reached_it_is_left_out(
    store_url: str, monkeypatch: pytest.MonkeyPatch, batch_size: int | None
) -> None:
    """Before: shop:6 was in the rebuilt model and its entry said ``replayed``."""
    with sql_skipped(store_url, monkeypatch) as (log, store, engine, projection):
        hook = Once(lambda: skip_a_late_event(engine, log, projection.name, monkeypatch))

        class SkipDuringRebuild(Replayer):
            def _fill(self, *args: Any) -> int:  # after a source's pass (committed)
                done = super()._fill(*args)
                hook()
                return done

        replayer = SkipDuringRebuild(engine.reader, projection, store, batch_size=batch_size)
        summary = replayer.run(ReplayOptions())

        assert hook.done
        assert sql_rows(store) == (WITH_LATE, AMOUNTS)
        assert summary.skipped_by_operator == 2 and summary.skipped == []
        assert statuses(engine, projection.name) == {
            "shop:2": "skipped",
            "shop:4": "retried",
            "shop:6": "skipped",
            "shop:7": "retried",
        }
        assert summary.checkpoints["shop"] == len(EVENTS) + len(LATE)
        assert engine.parked(projection.name) == []
        summary = Replayer(engine.reader, projection, store).run(ReplayOptions())  # again
        assert sql_rows(store) == (WITH_LATE, AMOUNTS) and summary.skipped_by_operator == 2


LATE_STATUSES = {"shop:2": "skipped", "shop:4": "retried", "shop:6": "skipped"}


def test_an_event_skipped_just_before_the_swap_is_left_out_of_its_catch_up(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Logged once the rebuild's passes are done (so only the swap's catch-up meets it),
    parked live, skipped before the swap: left out. shop:7, still parked behind it (the
    store's skip does not retry it), is re-attempted by the swap and marked ``replayed``."""
    with sql_skipped(store_url, monkeypatch) as (log, store, engine, projection):

        class SkipBeforeSwap(Replayer):
            def _swap(self, *args: Any) -> None:
                store.skip_parked(park_late_events(engine, log, projection.name, monkeypatch))
                super()._swap(*args)

        summary = SkipBeforeSwap(engine.reader, projection, store).run(ReplayOptions())

        assert sql_rows(store) == (WITH_LATE, AMOUNTS)
        assert summary.skipped_by_operator == 2
        assert statuses(engine, projection.name) == {**LATE_STATUSES, "shop:7": "replayed"}


def test_an_event_skipped_once_the_swap_locked_the_lanes_is_left_out(
    database_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last read of the skipped set is in the swap's transaction, after it locked the
    live lanes: a skip committed (by another connection) once they are locked is left out.
    PostgreSQL only: on SQLite the swap's transaction holds the database's write lock, so no
    skip commits while it runs."""
    with sql_skipped(database_for("postgresql"), monkeypatch) as (log, store, engine, projection):
        lock_lane = store.lock_lane
        late: list[int] = []  # shop:6's entry, once logged and parked (the passes done)
        skipped: list[int] = []

        def lock_then_skip(conn: sa.Connection, lane: Lane) -> int:
            found = lock_lane(conn, lane)
            if late and not skipped:  # the swap's first lane locked
                skipped.append(late[0])
                store.skip_parked(late[0])  # its own transaction, committed at once
            return found

        class SkipInTheSwap(Replayer):
            def _swap(self, *args: Any) -> None:
                late.append(park_late_events(engine, log, projection.name, monkeypatch))
                monkeypatch.setattr(store, "lock_lane", lock_then_skip)
                super()._swap(*args)

        summary = SkipInTheSwap(engine.reader, projection, store).run(ReplayOptions())

        assert skipped == late
        assert sql_rows(store) == (WITH_LATE, AMOUNTS)
        assert summary.skipped_by_operator == 2
        assert statuses(engine, projection.name) == {**LATE_STATUSES, "shop:7": "replayed"}


# -- a MongoDB document store ------------------------------------------------------------


@pytest.mark.parametrize("batch_size", BATCHES)
def test_a_document_rebuild_leaves_out_an_event_skipped_before_it_reached_it(
    docs_skipped: tuple[ProjectionEngine, MongoStore, OpSkipDocs],
    monkeypatch: pytest.MonkeyPatch,
    batch_size: int | None,
) -> None:
    """Before: shop:6 was in the new generation and its entry said ``replayed``."""
    engine, store, projection = docs_skipped
    log = engine.reader.log
    hook = Once(lambda: skip_a_late_event(engine, log, projection.name, monkeypatch))

    class SkipDuringRebuild(DocumentReplayer):
        def _shadow_batch(self, *args: Any) -> None:  # after a batch's transactions
            super()._shadow_batch(*args)
            hook()

    sizes = {} if batch_size is None else {"batch_size": batch_size}
    replayer = SkipDuringRebuild(engine.reader, projection, store, retire_after=0.0, **sizes)
    summary = replayer.run(ReplayOptions())

    assert hook.done
    assert doc_rows(store, projection) == (WITH_LATE, AMOUNTS)
    assert summary.skipped_by_operator == 2 and summary.skipped == []
    assert statuses(engine, projection.name) == {
        "shop:2": "skipped",
        "shop:4": "retried",
        "shop:6": "skipped",
        "shop:7": "retried",
    }
    assert summary.checkpoints["shop"] == len(EVENTS) + len(LATE)
    assert engine.parked(projection.name) == []


def test_a_document_rebuild_marks_replayed_an_event_skipped_after_it_applied_it(
    docs_skipped: tuple[ProjectionEngine, MongoStore, OpSkipDocs],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Parked when the rebuild started (so re-attempted), its handler fixed, skipped before
    the swap: the new generation has it, its entry says so (as for tables:
    test_an_event_skipped_during_the_rebuild_that_it_applied_is_marked_replayed)."""
    engine, store, projection = docs_skipped
    late = park_late_events(engine, engine.reader.log, projection.name, monkeypatch)

    class SkipBeforeSwap(DocumentReplayer):
        def _swap(self, *args: Any) -> None:
            store.skip_parked(late)
            super()._swap(*args)

    summary = SkipBeforeSwap(engine.reader, projection, store, retire_after=0.0).run(
        ReplayOptions()
    )

    assert doc_rows(store, projection) == (sorted([*LIVE, "shop:6", "shop:7"]), AMOUNTS)
    assert summary.skipped_by_operator == 1  # shop:2
    assert statuses(engine, projection.name) == {
        "shop:2": "skipped",
        "shop:4": "retried",
        "shop:6": "replayed",
        "shop:7": "replayed",
    }


# -- in place ------------------------------------------------------------------------------


def test_an_event_skipped_during_an_in_place_replay_is_left_out(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In place, each batch's transaction reads the skipped set again, after it locked the
    lanes. Before: shop:6, parked when the replay started (its aggregate held, so not
    applied in place), skipped meanwhile (released), was applied to the live tables."""
    with sql_skipped(store_url, monkeypatch) as (log, store, engine, projection):
        late = park_late_events(engine, log, projection.name, monkeypatch)
        (entry,) = [p for p in engine.parked(projection.name) if p.id == late]
        hook = Once(lambda: engine.skip(entry))

        class SkipInPlace(Replayer):
            def _in_place_batch(self, *args: Any) -> None:
                hook()
                super()._in_place_batch(*args)

        replayer = SkipInPlace(engine.reader, projection, store, batch_size=1)
        summary = replayer.run(ReplayOptions(from_position=0))

        assert hook.done
        assert sql_rows(store) == (WITH_LATE, AMOUNTS)
        assert summary.skipped_by_operator == 2
        assert statuses(engine, projection.name) == {**LATE_STATUSES, "shop:7": "retried"}


def test_an_event_skipped_during_a_document_in_place_replay_is_left_out(
    docs_skipped: tuple[ProjectionEngine, MongoStore, OpSkipDocs],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, store, projection = docs_skipped
    late = park_late_events(engine, engine.reader.log, projection.name, monkeypatch)
    (entry,) = [p for p in engine.parked(projection.name) if p.id == late]
    hook = Once(lambda: engine.skip(entry))

    class SkipInPlace(DocumentReplayer):
        def _in_place_ranges(self, *args: Any) -> None:
            hook()
            super()._in_place_ranges(*args)

    replayer = SkipInPlace(engine.reader, projection, store, retire_after=0.0, batch_size=1)
    summary = replayer.run(ReplayOptions(from_position=0))

    assert hook.done
    assert doc_rows(store, projection) == (WITH_LATE, AMOUNTS)
    assert summary.skipped_by_operator == 2
    assert statuses(engine, projection.name) == {**LATE_STATUSES, "shop:7": "retried"}
