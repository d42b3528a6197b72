"""A blue/green rebuild on SQLite: its transaction holds the database's one write lock (the
live lanes' batches wait for it), so it spans no more events than a transaction in place."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

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
        hooks = _OpenSpan(log.engine)
        summary = Replayer(LogReader(log), TallyProjection(), store, hooks=hooks).run(
            ReplayOptions()
        )
        assert summary.events == n
        assert max(hooks.spans) <= IN_PLACE_BATCH
    finally:
        log.close()
