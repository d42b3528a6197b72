"""An in-place replay whose batch the database refuses a write of (a constraint added by hand,
``NOT VALID``, after the events were applied live) finds the event by applying the batch in
halves, each under the lanes' locks, not in one transaction per event: with
``--skip-errors`` that event and its aggregate's later ones are skipped, the others applied."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from projections.api import Event, Projection, Tx, on
from projections.replay import Replayer, ReplayError, ReplayHooks, ReplayOptions
from tests.projection_fixtures import append_events, engine_on, log_events

metadata = sa.MetaData()
ledger = sa.Table(
    "inplace_ledger",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("value", sa.Integer, nullable=False),
)


class Ledger(Projection):
    name = "inplace_ledger"
    tables = (ledger,)
    replay_safe = True

    @on("shop", "Set")
    def set(self, event: Event[dict[str, Any]], tx: Tx) -> None:
        tx.upsert(ledger, {"id": event.aggregate_id, "value": event.payload["value"]})


class _Commits(ReplayHooks):
    def __init__(self) -> None:
        self.positions: list[int] = []

    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        self.positions.append(position)


def test_a_refused_write_in_place_is_narrowed_down_by_halves(
    pg_database: Callable[[], str],
) -> None:
    events = [(f"k{n % 8}", "Set", {"value": n}) for n in range(1, 65)]
    # k6's last event (writes to one row fold in a batch: only the last reaches the
    # database), refused once the check is added.
    events[61] = ("k6", "Set", {"value": 999})
    projection = Ledger()
    with engine_on(pg_database(), [projection]) as (log, store, engine):
        log_events(log, events)
        engine.catch_up(deadline=60)
        with log.engine.begin() as conn:
            conn.exec_driver_sql(
                "ALTER TABLE inplace_ledger ADD CONSTRAINT below_999 CHECK (value < 999) NOT VALID"
            )
            before = dict(conn.execute(sa.select(ledger.c.id, ledger.c.value)).all())
        commits = _Commits()
        replayer = Replayer(engine.reader, projection, store, hooks=commits, batch_size=64)
        summary = replayer.run(ReplayOptions(from_position=0, skip_errors=True))
        with log.engine.connect() as conn:
            after = dict(conn.execute(sa.select(ledger.c.id, ledger.c.value)).all())
    assert before["k6"] == 999
    assert [s.position for s in summary.skipped] == [62]
    assert "below_999" in summary.skipped[0].error
    assert after == {**before, "k6": 54}  # the others applied again (to the same values)
    assert 2 <= len(commits.positions) <= 14, commits.positions  # one by one: 64
    assert commits.positions == sorted(commits.positions) and commits.positions[-1] == 64


class _Failing(Ledger):
    """Its ``Boom`` handler fails once armed (after the events were applied live)."""

    armed = False

    @on("shop", "Boom")
    def boom(self, event: Event[dict[str, Any]], tx: Tx) -> None:
        if self.armed:
            raise ValueError("boom")


def test_in_place_a_refused_write_before_a_failing_handler_stops_at_the_write(
    pg_database: Callable[[], str],
) -> None:
    # In one batch: 62's write is refused only when the batch flushes, 63's handler fails
    # at once. The replay stops at the first of them, 62, not at the one it met first.
    events = [(f"k{n % 8}", "Set", {"value": n}) for n in range(1, 65)]
    events[61] = ("k6", "Set", {"value": 999})
    projection = _Failing()
    with engine_on(pg_database(), [projection]) as (log, store, engine):
        log_events(log, events)
        engine.catch_up(deadline=60)
        append_events(log, [("k1", "Boom", {})], after=64)
        engine.catch_up(deadline=60)
        projection.armed = True
        with log.engine.begin() as conn:
            conn.exec_driver_sql(
                "ALTER TABLE inplace_ledger ADD CONSTRAINT below_999 CHECK (value < 999) NOT VALID"
            )
        replayer = Replayer(engine.reader, projection, store, batch_size=100)
        with pytest.raises(ReplayError) as raised:
            replayer.run(ReplayOptions(from_position=0))
    assert raised.value.event.position == 62, str(raised.value)
