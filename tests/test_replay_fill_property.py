"""Property: a blue/green rebuild in transactions of any size (1..60 events), each read from
the log in parts of any size up to it, leaves what the events say (an independent model),
whatever the events: items made from some of their columns, touched, dropped, made again
and counted, with or without a write the database refuses (a CHECK constraint) and a
handler failing, anywhere. With ``skip_errors`` each failing event is skipped with its
item's later ones; without, the replay stops at the first of them, the live tables empty.
Nothing is left open either way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from projections.replay import ReplayError
from tests.replay_batch_helpers import (
    Events,
    FailingTally,
    TallyModel,
    flips,
    items,
    left_behind,
    notes,
    replay,
    rows,
    shadow_log,
    with_boom,
)


@dataclass(frozen=True)
class Case:
    """``n`` events of :func:`flips` (``seed``, ``overlapped``), the refused write at index
    ``bad_at``, then a ``Boom`` of ``boom_item`` inserted at index ``boom_at``; replayed in
    transactions of ``batch`` events read in parts of ``read``."""

    n: int
    seed: int
    batch: int
    read: int
    overlapped: bool = False
    bad_at: int | None = None
    boom_at: int | None = None
    boom_item: str = "i4"

    def events(self) -> Events:
        events = flips(self.n, self.seed, self.bad_at, overlapped=self.overlapped)
        if self.boom_at is not None:
            events = with_boom(events, self.boom_at, self.boom_item)
        return events

    def failing(self, events: Events) -> list[int]:
        """The positions of the failing events."""
        return [
            position
            for position, (item, kind, payload) in enumerate(events, start=1)
            if kind == "Boom" or payload.get("name") == "bad"
        ]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    n = draw(st.integers(1, 90))
    batch = draw(st.integers(1, 60))
    return Case(
        n=n,
        seed=draw(st.integers(0, 2**16)),
        batch=batch,
        read=draw(st.integers(1, batch)),
        overlapped=draw(st.booleans()),
        bad_at=draw(st.none() | st.integers(0, n - 1)),
        boom_at=draw(st.none() | st.integers(0, n)),
        boom_item=draw(st.sampled_from([f"i{k}" for k in range(10)])),
    )


_FOUND = Case(n=40, seed=6, batch=10, read=3, overlapped=True, bad_at=20, boom_at=23)
"""A write refused at position 21, a handler failing at 24, in the transaction of 21..30."""


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=cases())
@example(case=Case(n=40, seed=1, batch=1, read=1, bad_at=9, boom_at=25))  # one by one
@example(case=Case(n=60, seed=2, batch=7, read=7, bad_at=20, boom_at=33))  # read == batch
@example(  # the refused write in the last part of its transaction (at its flush)
    case=Case(n=60, seed=3, batch=20, read=5, overlapped=True, bad_at=37)
)
@example(case=Case(n=50, seed=4, batch=12, read=5, boom_at=0, boom_item="i7"))  # the first
@example(case=Case(n=50, seed=5, batch=12, read=5, bad_at=0))  # a refused first event
@example(case=_FOUND)  # found by this test: it stopped at 24, not 21
def test_a_rebuild_leaves_what_the_events_say(pg_database: Callable[[], str], case: Case) -> None:
    events = case.events()
    failing = case.failing(events)
    model = TallyModel(events, skip=failing)
    log = shadow_log(pg_database(), events)  # one database per example
    try:
        if failing:
            with pytest.raises(ReplayError) as raised:
                replay(log, case.batch, read=case.read, projection=FailingTally())
            first = raised.value.event.position
            assert first in failing
            assert first == failing[0]
            assert left_behind(log) == ([], [])
            assert rows(log, items) == {} and rows(log, notes) == {}  # live tables untouched
        summary = replay(  # starts over
            log, case.batch, read=case.read, projection=FailingTally(), skip_errors=True
        )
        assert [e.position for e in summary.skipped] == model.skipped_positions
        assert summary.events == len(events) - len(model.skipped_positions)
        assert rows(log, items) == model.items
        assert rows(log, notes) == model.notes
        assert left_behind(log) == ([], [])
    finally:
        log.close()


def test_a_strict_rebuild_stops_at_a_refused_write_before_a_failing_handler(
    pg_database: Callable[[], str],
) -> None:
    # _FOUND: 21 makes the item the CHECK constraint refuses (at the flush), 24 fails in its
    # handler, in one transaction: the replay must stop at 21, the first failing event.
    events = _FOUND.events()
    assert _FOUND.failing(events) == [21, 24]
    log = shadow_log(pg_database(), events)
    try:
        with pytest.raises(ReplayError) as raised:
            replay(log, _FOUND.batch, read=_FOUND.read, projection=FailingTally())
        assert left_behind(log) == ([], [])
        assert raised.value.event.position == 21
    finally:
        log.close()
