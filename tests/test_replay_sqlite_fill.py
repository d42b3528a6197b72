"""A blue/green rebuild on SQLite: its transaction holds the database's one write lock (the
live lanes' batches wait for it), so it spans no more events than a transaction in place;
it takes that lock for nothing it does not write (PostgreSQL's hand-made indexes and keys)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from outbox.envelope import aggregate_hash
from outbox.log import EventLog
from outbox.schema import event_log, log_heads
from projections.log_reader import LogReader
from projections.replay import IN_PLACE_BATCH, Replayer, ReplayHooks, ReplayOptions
from projections.sql_store import SqlStore
from tests.replay_batch_helpers import SOURCE, TallyProjection


class _OpenSpan(ReplayHooks):
    """At each report, how far the replay is past the shadow checkpoint committed (read by
    a connection of its own): the events its open transaction holds the write lock for."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.spans: list[int] = []

    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        with self.engine.connect() as conn:
            committed = conn.exec_driver_sql(
                "SELECT max(position) FROM rm_checkpoints WHERE projection = 'pipe_tally__rebuild'"
            ).scalar()
        if committed is not None:  # None: the swap's report, its checkpoints gone
            self.spans.append(position - committed)


def _write_log(log: EventLog, n: int) -> None:
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for position in range(1, n + 1):
        item = f"i{position % 5000}"
        rows.append(
            {
                "source": SOURCE,
                "position": position,
                "event_id": str(uuid.uuid4()),
                "aggregate_type": "item",
                "aggregate_id": item,
                "key_hash": aggregate_hash("item", item),
                "event_type": "Made" if position <= 5000 else "Touched",
                "payload": {"name": "n1"},
                "occurred_at": now,
            }
        )
    with log.engine.begin() as conn:
        conn.execute(event_log.insert(), rows)
        conn.execute(log_heads.insert(), [{"source": SOURCE, "head": n}])


def test_a_rebuild_transaction_on_sqlite_spans_an_in_place_batch(
    sqlite_database: Callable[[], str],
) -> None:
    dsn = sqlite_database()
    log = EventLog(dsn)
    try:
        log.create_tables()
        store = SqlStore(dsn, engine=log.engine)
        store.create_tables([TallyProjection()])
        n = 2 * IN_PLACE_BATCH + 500
        _write_log(log, n)
        hooks = _OpenSpan(log.engine)
        summary = Replayer(LogReader(log), TallyProjection(), store, hooks=hooks).run(
            ReplayOptions()
        )
        assert summary.events == n
        assert max(hooks.spans) <= IN_PLACE_BATCH
    finally:
        log.close()


class _LockedAtTheSwap(ReplayHooks):
    """Before the swap: another connection takes SQLite's write lock, then the replay fails
    (as a killed hook or a Ctrl-C there would)."""

    def __init__(self, path: str) -> None:
        self.locker = sqlite3.connect(path, timeout=0)
        self.locker.isolation_level = None

    def before_swap(self) -> None:
        self.locker.execute("BEGIN IMMEDIATE")
        raise RuntimeError("stopped before the swap")


def test_a_rebuild_failing_on_sqlite_while_another_connection_writes_warns_of_no_keys(
    sqlite_database: Callable[[], str],
) -> None:
    """On SQLite there are no foreign keys to tables outside to drop from the shadow: the
    failure is raised at once, not after waiting the busy timeout for the write lock to
    look for them and warning that they were left ("deletes may be refused")."""
    dsn = sqlite_database()
    log = EventLog(dsn)
    hooks = _LockedAtTheSwap(str(sa.make_url(dsn).database))
    try:
        log.create_tables()
        store = SqlStore(dsn, engine=log.engine)
        store.create_tables([TallyProjection()])
        _write_log(log, 50)
        replayer = Replayer(LogReader(log), TallyProjection(), store, hooks=hooks)
        with capture_logs() as logs, pytest.raises(RuntimeError, match="before the swap"):
            replayer.run(ReplayOptions())
        assert [e for e in logs if e["log_level"] == "warning"] == []
    finally:
        hooks.locker.close()
        log.close()
