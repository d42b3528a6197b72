"""The events a lane applied are counted, also those the engine applies before a failing
event while it looks for an earlier one failing on its own. A live batch where a handler
fails at its last event after an earlier event whose write the database refuses: the
engine applies the events before the failing one (one by one once their writes are
refused), applies the first, meets the refused one and parks it. The first event is
applied and stays applied, but was not counted: ``catch_up`` (and a lane's progress,
``RetryLater.applied``, the metrics told by ``EngineHooks.after_batch``) said one event
fewer than the lane had applied. And an event the lane parked that fails again while the
engine applies the events before a failing one stops the lane, as one failing again in
its batch does."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from outbox.errors import StoreError
from projections.api import Event, Projection, Tx, on
from projections.engine import EngineHooks, RetryLater
from projections.store import BatchResult, Lane
from tests.projection_fixtures import engine_on, log_events

owners = sa.Table(
    "counted_owners",
    sa.MetaData(),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("owner", sa.Text, nullable=False),
)


class Owners(Projection):
    name = "counted_owners"
    tables = (owners,)
    partitions = 1  # one lane: one batch holds every event

    @on("shop", "Placed")
    def placed(self, event: Event[dict], tx: Tx) -> None:
        if event.payload.get("boom"):
            raise RuntimeError(f"a bug met at {event.aggregate_id}")
        tx.upsert(owners, {"id": event.aggregate_id, "owner": event.payload["owner"]})


EVENTS = [
    ("w", "Placed", {"owner": "t"}),  # applied while the engine looks for an earlier failure
    ("x", "Placed", {"owner": None}),  # refused: NULL, found once the events go one by one
    ("y", "Placed", {"owner": "v"}),
    ("z", "Placed", {"owner": "u", "boom": True}),  # its handler fails first
]


def _applied(log: object) -> list[str]:
    with log.engine.connect() as conn:  # type: ignore[attr-defined]
        return sorted(conn.execute(sa.select(owners.c.id)).scalars().all())


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_catch_up_counts_the_events_applied_before_an_earlier_refused_event(
    backend: str, database_for: Callable[[str], str]
) -> None:
    with engine_on(database_for(backend), [Owners()], batch_size=100, max_attempts=1) as (
        log,
        store,
        engine,
    ):
        log_events(log, EVENTS)
        counted = engine.catch_up(deadline=30)
        parked = sorted(p.position for p in store.parked("counted_owners"))
        applied = _applied(log)
    assert parked == [2, 4]
    assert applied == ["w", "y"]
    assert counted == len(applied)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_retry_later_counts_the_events_applied_before_an_earlier_refused_event(
    backend: str, database_for: Callable[[str], str]
) -> None:
    with engine_on(database_for(backend), [Owners()], batch_size=100, max_attempts=3) as (
        log,
        store,
        engine,
    ):
        log_events(log, EVENTS)
        lane = next(iter(engine.lanes(engine.projection("counted_owners"), None)))
        with pytest.raises(RetryLater) as retry:
            engine.process(lane)
        parked = sorted(p.position for p in store.parked("counted_owners"))
        applied = _applied(log)
    assert parked == []  # the refused event is retried first: an earlier failure
    assert retry.value.event.position == 2
    assert applied == ["w"]
    assert retry.value.applied == len(applied)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_each_committed_batch_is_told_to_the_hooks_also_those_before_a_failing_event(
    backend: str, database_for: Callable[[str], str]
) -> None:
    """The metrics (:class:`workers.metrics.EngineMetrics`) count the events applied from
    :meth:`EngineHooks.after_batch`: the batches applied before a failing event were not
    told, and the events they applied never counted."""
    told: list[BatchResult] = []

    class Told(EngineHooks):
        def after_batch(self, lane: Lane, result: BatchResult, seconds: float) -> None:
            told.append(result)

    with engine_on(database_for(backend), [Owners()], batch_size=100, max_attempts=1) as (
        log,
        store,
        engine,
    ):
        engine.hooks = Told()
        log_events(log, EVENTS)
        engine.catch_up(deadline=30)
        applied = _applied(log)
    assert applied == ["w", "y"]
    assert sum(result.applied for result in told) == len(applied), told


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_a_lane_stops_when_an_earlier_event_it_parked_fails_again(
    backend: str, database_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store whose hold holds nothing (tests/test_untenanted_holds.py): the refused event
    is parked, then met again only while the engine applies the events before the failing
    handler's. It was parked again and again (each time a failure counted) until the
    deadline, or for ever without one, instead of the lane stopping."""
    with engine_on(database_for(backend), [Owners()], batch_size=100, max_attempts=1) as (
        log,
        store,
        engine,
    ):
        monkeypatch.setattr(store, "hold", lambda *args, **kwargs: None)
        log_events(log, EVENTS)
        started = time.monotonic()
        with pytest.raises(StoreError, match="shop:2 failed again after it was parked"):
            engine.catch_up(deadline=5)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_a_lane_stopped_after_a_failure_reports_the_checkpoint_it_reached(
    backend: str, database_for: Callable[[str], str]
) -> None:
    """Past ``stop_at`` once the failing event is dealt with: the events before it were
    applied (the lane's checkpoint moved), but the progress said the checkpoint of the last
    batch without a failure (0: none)."""
    events = [("v", "Placed", {"owner": "s"}), ("w", "Placed", {"owner": "t"})]
    events.append(("z", "Placed", {"owner": "u", "boom": True}))
    with engine_on(database_for(backend), [Owners()], batch_size=100, max_attempts=1) as (
        log,
        store,
        engine,
    ):
        log_events(log, events)
        lane = next(iter(engine.lanes(engine.projection("counted_owners"), None)))
        progress = engine.process(lane, stop_at=time.monotonic() - 1)
        checkpoint = store.checkpoints("counted_owners")[(lane.source, lane.partition)]
    assert (progress.applied, checkpoint) == (2, 2)
    assert progress.checkpoint == checkpoint
