"""Parked entries of a SQL store as the parked commands see and resolve them: listed and
shown, skipped one by one (the hold left with nothing parked released), and the record of a
retry that failed again.

:class:`SqlParkedEntries` is mixed into :class:`projections.sql_store.SqlStore`, beside
:class:`projections.sql_parking.SqlParking`, which writes the holds and parked events.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from outbox.errors import NotParked
from projections.store import AggregateKey, HandlerFailed, Lane, ParkedEvent
from projections.store_tables import blocked, failures, parked_events


class SqlParkedEntries:
    """The parked-entry half of a SQL store's parking; needs its ``engine`` and ``writer``."""

    engine: sa.Engine
    writer: sa.Engine

    def parked(
        self, projection: str | None = None, status: str | None = "parked"
    ) -> list[ParkedEvent]:
        query = sa.select(parked_events).order_by(parked_events.c.id)
        if projection is not None:
            query = query.where(parked_events.c.projection == projection)
        if status is not None:
            query = query.where(parked_events.c.status == status)
        with self.engine.connect() as conn:
            return [ParkedEvent(**row._mapping) for row in conn.execute(query)]

    def parked_entry(self, entry_id: int) -> ParkedEvent | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(parked_events).where(parked_events.c.id == entry_id)
            ).first()
        return None if row is None else ParkedEvent(**row._mapping)

    def record_failed_retry(
        self, lane: Lane, aggregate: AggregateKey, failed: HandlerFailed
    ) -> None:
        """A parked event failed again on retry (or on a skip's retry of the events held
        behind it): its entry and the aggregate's block now say so, and the events after it
        are held behind it instead of behind an event that is no longer parked."""
        event = failed.event
        position = event.position or 0
        reason = f"handler failed again on retry: {failed.error!r}"
        here = (*parked_of(lane, aggregate), parked_events.c.status == "parked")
        with self.writer.begin() as conn:
            conn.execute(
                parked_events.update()
                .where(*here, parked_events.c.position == position)
                .values(
                    reason=reason,
                    detail=failed.detail,
                    attempts=parked_events.c.attempts + 1,
                )
            )
            conn.execute(
                parked_events.update()
                .where(*here, parked_events.c.position > position)
                .values(
                    reason=f"held: an earlier event of this aggregate is parked "
                    f"({lane.source}:{position})"
                )
            )
            conn.execute(
                blocked.update()
                .where(*_block_of(lane, aggregate))
                .values(since_position=position, reason=reason, detail=failed.detail)
            )

    def skip_parked(self, entry_id: int) -> ParkedEvent | None:
        """Skip the entry if it is still parked; ``None`` if not (none such, or settled
        meanwhile). Its row is locked first (``FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE``
        already serialises): a replay's swap settling it concurrently is waited for and its
        status then read, never overwritten, nor a hold the swap set released."""
        with self.writer.begin() as conn:
            row = conn.execute(
                sa.select(parked_events).where(parked_events.c.id == entry_id).with_for_update()
            ).first()
            if row is None or row.status != "parked":
                return None
            updated = conn.execute(
                parked_events.update()
                .where(parked_events.c.id == entry_id, parked_events.c.status == "parked")
                .values(status="skipped", resolved_at=sa.func.current_timestamp())
            ).rowcount
            if updated != 1:  # under the lock it cannot change; if it did, nothing written
                return None
            lane = Lane(row.projection, row.source, -1)
            aggregate = AggregateKey(row.tenant, row.aggregate_type, row.aggregate_id)
            remaining = conn.execute(
                sa.select(sa.func.count()).where(
                    *parked_of(lane, aggregate), parked_events.c.status == "parked"
                )
            ).scalar_one()
            if remaining == 0:
                self._release(conn, lane, aggregate, [row.position])
        return self.parked_entry(entry_id)

    def _release(
        self, conn: sa.Connection, lane: Lane, aggregate: AggregateKey, positions: list[int]
    ) -> None:
        conn.execute(blocked.delete().where(*_block_of(lane, aggregate)))
        conn.execute(
            failures.delete().where(
                failures.c.projection == lane.projection,
                failures.c.source == lane.source,
                failures.c.position.in_(positions),
            )
        )


def _block_of(lane: Lane, aggregate: AggregateKey) -> tuple[Any, ...]:
    """The ``rm_blocked_aggregates`` row of an aggregate of the lane's projection and source."""
    return (
        blocked.c.projection == lane.projection,
        blocked.c.source == lane.source,
        blocked.c.tenant == aggregate.tenant,
        blocked.c.aggregate_type == aggregate.aggregate_type,
        blocked.c.aggregate_id == aggregate.aggregate_id,
    )


def still_parked(conn: sa.Connection, entry_id: int) -> None:
    """Raise :class:`NotParked` unless entry ``entry_id`` is parked. Its row is locked until
    ``conn`` commits (``FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE`` already serialises): a
    skip holding it is waited for and its status then read; a later skip waits, then finds
    the entry settled by the retry."""
    status = conn.execute(
        sa.select(parked_events.c.status).where(parked_events.c.id == entry_id).with_for_update()
    ).scalar_one_or_none()
    if status != "parked":
        raise NotParked(f"e{entry_id} is not parked", status)


def parked_of(lane: Lane, aggregate: AggregateKey) -> tuple[Any, ...]:
    """The ``rm_parked_events`` rows parked under the hold of ``aggregate`` of the lane's
    projection and source (whatever their status)."""
    return (
        parked_events.c.projection == lane.projection,
        parked_events.c.source == lane.source,
        parked_events.c.tenant == aggregate.tenant,
        parked_events.c.aggregate_type == aggregate.aggregate_type,
        parked_events.c.aggregate_id == aggregate.aggregate_id,
    )
