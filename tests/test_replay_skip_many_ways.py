"""Property: a rebuild with ``--skip-errors`` skipping several failing handlers in one
transaction, each after writes, reads, a delete, a prefetch, a cache tag or a flush of its
own, leaves what the events say (:class:`TallyModel`) and lists the skipped events in order,
whatever the transactions' size, with or without a write the database refuses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections.api import Event, Tx, on
from tests.replay_batch_helpers import (
    SOURCE,
    TallyModel,
    TallyProjection,
    flips,
    items,
    left_behind,
    notes,
    replay,
    rows,
    shadow_log,
)

_WAYS = ("prefetch", "read", "delete", "find", "other")


class _ManyWays(TallyProjection):
    @on(SOURCE, "Boom")
    def boom(self, event: Event[dict[str, Any]], tx: Tx) -> None:
        ways = event.payload
        if ways.get("prefetch"):
            tx.prefetch(items, [event.aggregate_id, "i1"])
        if ways.get("read"):
            tx.get(items, event.aggregate_id)
        tx.upsert(items, {"item_id": event.aggregate_id, "name": "boom", "count": 0})
        if ways.get("other"):
            tx.upsert(notes, {"item_id": "i1", "peers": 99})
        if ways.get("delete"):
            tx.delete(items, "i2")
        tx.invalidate("boom")
        if ways.get("find"):
            tx.find(items, name="boom")
        raise ValueError("boom")


@st.composite
def _events(draw: st.DrawFn) -> list[tuple[str, str, dict[str, Any]]]:
    n = draw(st.integers(1, 60))
    bad_at = draw(st.none() | st.integers(0, n - 1))
    events = flips(n, draw(st.integers(0, 2**16)), bad_at, overlapped=draw(st.booleans()))
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(events)))
        item = draw(st.sampled_from([f"i{k}" for k in range(10)]))
        ways = {way: True for way in draw(st.sets(st.sampled_from(_WAYS)))}
        events.insert(at, (item, "Boom", ways))
    return events


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=_events(), batch=st.integers(1, 40))
def test_several_skips_in_a_transaction_leave_what_the_events_say(
    pg_database: Callable[[], str], events: list[tuple[str, str, dict[str, Any]]], batch: int
) -> None:
    failing = [
        position
        for position, (_, kind, payload) in enumerate(events, start=1)
        if kind == "Boom" or payload.get("name") == "bad"
    ]
    model = TallyModel(events, skip=failing)
    log = shadow_log(pg_database(), events)
    try:
        summary = replay(log, batch, projection=_ManyWays(), skip_errors=True)
        assert [e.position for e in summary.skipped] == model.skipped_positions
        assert summary.events == len(events) - len(model.skipped_positions)
        assert rows(log, items) == model.items
        assert rows(log, notes) == model.notes
        assert left_behind(log) == ([], [])
    finally:
        log.close()
