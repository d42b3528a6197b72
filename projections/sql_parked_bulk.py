"""Set-based parked-event work of a SQL store (``readmodel parked skip --projection``).

:class:`SqlBulkParking` is mixed into :class:`projections.sql_store.SqlStore`: many entries
are skipped in one transaction, a few statements for them all, and the holds left with
nothing parked are released as :meth:`~projections.sql_parked_entries.SqlParkedEntries.skip_parked`
releases one.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from outbox.commits import begin_telling_commit
from outbox.errors import CommitInterrupted, CommitUncertain
from outbox.parking import PurgeProgress
from projections.store import AggregateKey
from projections.store_tables import blocked, failures, parked_events

CHUNK = 5000
"""Ids per ``IN (...)``: far below any database's limit on bound parameters."""

_HOLD = ("projection", "source", "tenant", "aggregate_type", "aggregate_id")


def _lock_in_id_order(conn: sa.Connection, ids: Sequence[int]) -> None:
    """Lock the parked entries of ``ids`` in id order, as a replay's swap locks its
    projection's (:func:`projections.sql_settle.lock_parked`): the UPDATE alone locks them
    in the order it reads them (where the rows lie, not their ids), and the two deadlocked.
    PostgreSQL only: SQLite's writer holds the one write lock from ``BEGIN IMMEDIATE``."""
    if conn.dialect.name != "postgresql":
        return
    c = parked_events.c
    conn.execute(
        sa.select(c.id).where(c.id.in_(ids), c.status == "parked").order_by(c.id).with_for_update()
    ).all()


class SqlBulkParking:
    """The bulk half of a SQL store's parking; needs its ``writer``."""

    writer: sa.Engine

    def skip_parked_many(self, entry_ids: Sequence[int]) -> int:
        ids = sorted(set(entry_ids))
        if not ids:
            return 0
        columns = [parked_events.c[name] for name in _HOLD]
        with begin_telling_commit(self.writer, "cannot skip parked events") as conn:
            skipped: list[sa.Row] = []
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                _lock_in_id_order(conn, chunk)
                skipped += conn.execute(
                    parked_events.update()
                    .where(parked_events.c.id.in_(chunk), parked_events.c.status == "parked")
                    .values(status="skipped", resolved_at=sa.func.current_timestamp())
                    .returning(*columns, parked_events.c.position)
                ).all()
            holds = {tuple(row[: len(_HOLD)]) for row in skipped}
            projections = sorted({hold[0] for hold in holds})
            still = {
                tuple(row)
                for row in conn.execute(
                    sa.select(*columns)
                    .distinct()
                    .where(
                        parked_events.c.projection.in_(projections),
                        parked_events.c.status == "parked",
                    )
                )
            }
            released = holds - still
            if released:
                conn.execute(
                    blocked.delete().where(
                        *(blocked.c[name] == sa.bindparam(f"h_{name}") for name in _HOLD)
                    ),
                    [{f"h_{name}": v for name, v in zip(_HOLD, h, strict=True)} for h in released],
                )
                conn.execute(
                    failures.delete().where(
                        failures.c.projection == sa.bindparam("f_projection"),
                        failures.c.source == sa.bindparam("f_source"),
                        failures.c.position == sa.bindparam("f_position"),
                    ),
                    [
                        {"f_projection": row[0], "f_source": row[1], "f_position": row[-1]}
                        for row in skipped
                        if tuple(row[: len(_HOLD)]) in released
                    ],
                )
        return len(skipped)

    def blocked_since(self, projection: str) -> dict[tuple[str, AggregateKey], int]:
        with self.writer.connect() as conn:
            rows = conn.execute(
                sa.select(*(blocked.c[name] for name in _HOLD[1:]), blocked.c.since_position).where(
                    blocked.c.projection == projection
                )
            ).all()
        return {(row[0], AggregateKey(*row[1:4])): int(row[4]) for row in rows}

    def purge_skipped(self, entry_ids: Sequence[int], progress: PurgeProgress | None = None) -> int:
        ids = sorted(set(entry_ids))
        deleted = 0
        progress = PurgeProgress() if progress is None else progress
        try:
            with begin_telling_commit(self.writer, "cannot purge skipped parked events") as conn:
                for start in range(0, len(ids), CHUNK):
                    deleted += conn.execute(
                        parked_events.delete().where(
                            parked_events.c.id.in_(ids[start : start + CHUNK]),
                            parked_events.c.status == "skipped",
                        )
                    ).rowcount
        except (CommitUncertain, CommitInterrupted):
            progress.uncertain += len(ids)
            raise
        progress.deleted += deleted  # one transaction: all of it, once committed
        progress.handled += len(ids)
        return deleted
