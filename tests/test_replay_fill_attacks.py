"""A blue/green rebuild attacked while a long fill transaction is open: the replay's writer or
its log reader's connection terminated, events logged meanwhile (and one the swap's catch-up
refuses), several failing events in one transaction and across its parts, and how early and
how often progress is reported."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import pytest

from outbox.db import libpq_conninfo
from outbox.envelope import aggregate_hash
from outbox.errors import StoreError
from projections.api import Event, Tx, on
from projections.replay import ReplayError, ReplayHooks
from tests.replay_batch_helpers import (
    SOURCE,
    TallyModel,
    TallyProjection,
    flips,
    items,
    left_behind,
    replay,
    rows,
    shadow_log,
)


@pytest.fixture
def shadow(pg_database: Callable[[], str]) -> Iterator[Callable[[list[Any]], Any]]:
    made: list[Any] = []

    def make(events: list[Any]) -> Any:
        dsn = pg_database()
        made.append(shadow_log(dsn, events))
        made[-1].dsn = dsn  # for _append's own connection
        return made[-1]

    yield make
    for log in made:
        log.close()


def _append(log: Any, events: list[Any]) -> None:
    """Log ``events`` after the log's head (as a live producer would, committed at once)."""
    with psycopg.connect(libpq_conninfo(log.dsn), autocommit=True) as conn:
        head = conn.execute("SELECT head FROM rm_log_heads WHERE source = %s", (SOURCE,))
        position = head.fetchone()[0]
        for item, kind, payload in events:
            position += 1
            conn.execute(
                "INSERT INTO rm_event_log (source, position, event_id, aggregate_type, "
                "aggregate_id, key_hash, event_type, payload, occurred_at) "
                "VALUES (%s, %s, %s, 'item', %s, %s, %s, %s, %s)",
                (
                    SOURCE,
                    position,
                    str(uuid.uuid4()),
                    item,
                    aggregate_hash("item", item),
                    kind,
                    orjson.dumps(payload).decode(),
                    datetime.now(UTC),
                ),
            )
        conn.execute("UPDATE rm_log_heads SET head = %s WHERE source = %s", (position, SOURCE))
        # A live lane applied them meanwhile (to the live tables): its checkpoint moved.
        conn.execute(
            "INSERT INTO rm_checkpoints (projection, source, partition, position) "
            "VALUES ('pipe_tally', %s, 0, %s) ON CONFLICT (projection, source, partition) "
            "DO UPDATE SET position = EXCLUDED.position",
            (SOURCE, position),
        )


class _Attack(TallyProjection):
    """At a ``Strike`` event: terminates the replay's writer or its log reader's session, or
    logs more events (``log``), then goes on as a ``Touched``."""

    def __init__(self, log: Any, what: str, more: list[Any] | None = None) -> None:
        self.log = log
        self.what = what
        self.more = more or []

    @on(SOURCE, "Strike")
    def strike(self, event: Event[dict[str, Any]], tx: Tx) -> None:
        if self.what == "log":
            _append(self.log, self.more)
            return
        own = tx.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()  # type: ignore[attr-defined]
        with self.log.engine.connect() as conn:
            if self.what == "writer":
                where = f"pid = {own}"
            else:  # the server-side cursor's session
                where = f"pid <> {own} AND query LIKE '%%rm_replay_%%'"
            pids = conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = current_database() AND pid <> pg_backend_pid() AND {where}"
            ).all()
            assert pids, self.what


def _strike(events: list[Any], at: int) -> list[Any]:
    return [*events[:at], ("i1", "Strike", {}), *events[at:]]


class StrikeModel(TallyModel):
    def strike(self, item: str, payload: dict[str, Any]) -> None:
        pass


@pytest.mark.parametrize("what", ["writer", "reader"])
def test_a_connection_terminated_mid_transaction(shadow: Any, what: str) -> None:
    events = _strike(flips(200, seed=5), at=130)
    log = shadow(events)
    with pytest.raises(StoreError) as raised:
        replay(log, 100, projection=_Attack(log, what), read=7)
    said = "pipe_tally: replay failed" if what == "writer" else "reading the event log failed"
    assert said in str(raised.value) and "AdminShutdown" in str(raised.value)
    assert left_behind(log) == ([], [])
    assert rows(log, items) == {}  # the live tables untouched
    summary = replay(log, 100, projection=_Attack(log, "log"), read=7)
    assert rows(log, items) == StrikeModel(events).items
    assert summary.events == len(events)


def test_events_logged_while_a_long_transaction_is_open_are_swapped_in(shadow: Any) -> None:
    more = flips(300, seed=8)
    events = _strike(flips(200, seed=7), at=20)
    log = shadow(events)
    summary = replay(log, None, projection=_Attack(log, "log", more))
    assert rows(log, items) == StrikeModel([*events, *more]).items
    assert summary.events == len(events) + len(more)
    assert left_behind(log) == ([], [])


class _LogBeforeSwap(ReplayHooks):
    def __init__(self, log: Any, more: list[Any]) -> None:
        self.log = log
        self.more = more

    def before_swap(self) -> None:
        _append(self.log, self.more)


@pytest.mark.parametrize("skip", [True, False])
def test_a_write_refused_in_the_swaps_catch_up(shadow: Any, skip: bool) -> None:
    events = flips(60, seed=2)
    more = flips(40, seed=3, bad_at=10, overlapped=True)
    log = shadow(events)
    hooks = _LogBeforeSwap(log, more)
    if not skip:
        with pytest.raises(ReplayError) as raised:
            replay(log, None, hooks=hooks)
        assert raised.value.event.position == 71
        assert rows(log, items) == {}
        assert left_behind(log) == ([], [])
        return
    summary = replay(log, None, hooks=hooks, skip_errors=True)
    model = TallyModel([*events, *more], skip=71)
    assert [e.position for e in summary.skipped] == model.skipped_positions
    assert rows(log, items) == model.items
    assert left_behind(log) == ([], [])


class _Failing(TallyProjection):
    @on(SOURCE, "Boom")
    def boom(self, event: Event[dict[str, Any]], tx: Tx) -> None:
        tx.upsert(items, {"item_id": event.aggregate_id, "name": "boom", "count": 0})
        raise ValueError("boom")


def test_several_failing_events_in_a_transaction_and_across_parts(shadow: Any) -> None:
    base = flips(200, seed=11)
    events = list(base)
    for at, item in [(150, "i7"), (61, "i3"), (60, "i2"), (12, "i5")]:
        events.insert(at, (item, "Boom", {}))
    log = shadow(events)
    summary = replay(log, 90, projection=_Failing(), read=8, skip_errors=True)
    held: set[str] = set()
    kept = []
    skipped = []
    for position, (item, kind, payload) in enumerate(events, start=1):
        if kind == "Boom":
            held.add(item)
        if item in held:
            skipped.append(position)
            continue
        kept.append((item, kind, payload))
    assert sorted(e.position for e in summary.skipped) == skipped
    assert rows(log, items) == TallyModel(kept).items
    assert summary.events == len(kept)
    assert left_behind(log) == ([], [])


class _Progress(ReplayHooks):
    def __init__(self) -> None:
        self.reports: list[tuple[int, int]] = []

    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        self.reports.append((position, applied))


def test_progress_moves_with_each_part_read_of_a_long_transaction(shadow: Any) -> None:
    # Transactions of 100 events read 10 at a time: a user sees the bar move with each part
    # applied, not once per transaction; what it ends at is what was applied.
    events = flips(300, seed=12)
    log = shadow(events)
    hooks = _Progress()
    summary = replay(log, 100, hooks=hooks, read=10)
    assert hooks.reports[0] == (10, 10)
    assert len(hooks.reports) >= 30
    assert [applied for _, applied in hooks.reports] == sorted(a for _, a in hooks.reports)
    assert hooks.reports[-1] == (300, summary.events)


def test_progress_after_a_rolled_back_transaction_counts_its_events_once(shadow: Any) -> None:
    # A failing event in the fifth part of the second transaction: what its parts reported
    # before the rollback is taken back, so the bar never counts an event twice.
    events = list(flips(300, seed=13))
    events.insert(145, ("i2", "Boom", {}))
    log = shadow(events)
    hooks = _Progress()
    summary = replay(log, 100, projection=_Failing(), hooks=hooks, read=10, skip_errors=True)
    assert max(applied for _, applied in hooks.reports) <= len(events)
    assert hooks.reports[-1] == (len(events), summary.events)
    assert all(applied <= position for position, applied in hooks.reports)


class _InterruptAt(ReplayHooks):
    """Ctrl-C at the ``at``-th progress report."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.calls = 0

    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("at", [1, 3, 7, 12])
def test_ctrl_c_in_a_report_between_parts_or_after_a_redo(shadow: Any, at: int) -> None:
    # Reports between two parts of an open transaction (1, 3), at a commit (7), and after
    # the redo (12) of the transaction a failing event rolled back: the reader thread
    # stops, no transaction is left open, the live tables untouched; the next replay
    # completes.
    events = list(flips(120, seed=14))
    events.insert(70, ("i3", "Boom", {}))
    log = shadow(events)
    with pytest.raises(KeyboardInterrupt):
        replay(log, 40, projection=_Failing(), hooks=_InterruptAt(at), read=6, skip_errors=True)
    assert left_behind(log) == ([], [])
    assert rows(log, items) == {}
    summary = replay(log, 40, read=6)
    kept = [event for event in events if event[1] != "Boom"]
    assert summary.events == len(kept)
    assert rows(log, items) == TallyModel(kept).items
