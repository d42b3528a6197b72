"""A rebuild's swap settles the projection's parked events of a SQL store
(:func:`settle_parked`, as :func:`projections.document_settle.settle_parked` does for
documents)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa

from projections.replay_skipped import (
    OperatorSkips,
    settled_statuses,
    sql_settle_skipped_since,
)
from projections.sql_parking import SqlParking
from projections.store import ParkedEntry
from projections.store_tables import blocked, failures, parked_events

if TYPE_CHECKING:
    from projections.replay_types import SkippedEvent


def lock_parked(conn: sa.Connection, name: str) -> None:
    """Lock the parked entries of projection ``name`` until ``conn`` commits, before the
    swap's last read of the skipped set: a skip (or retry's record) of one of them that
    commits after that read and before :func:`settle_parked` would be parked again there.
    A skip holding one is waited for (its skip is then read); a later one waits for the swap
    and finds the entry settled. PostgreSQL only: on SQLite the swap holds the one write
    lock from its ``BEGIN IMMEDIATE``."""
    if conn.dialect.name != "postgresql":
        return
    c = parked_events.c
    conn.execute(
        sa.select(c.id)
        .where(c.projection == name, c.status == "parked")
        .order_by(c.id)
        .with_for_update()
    ).all()


def settle_parked(
    store: SqlParking,
    conn: sa.Connection,
    name: str,
    skipped: Sequence[SkippedEvent],
    skips: OperatorSkips | None = None,
) -> int:
    """The rebuilt model of projection ``name`` contains what was parked live: release it;
    park what the rebuild skipped instead. Events an operator skipped stay skipped unless
    the rebuild applied them (``skips``: :mod:`projections.replay_skipped`). Returns how many
    live parked events were released (not those the rebuild skipped again: they stay parked)."""

    again = {(event.source, event.position) for event in skipped}
    live = conn.execute(
        sa.select(parked_events.c.source, parked_events.c.position).where(
            parked_events.c.projection == name, parked_events.c.status == "parked"
        )
    )
    released = sum((source, int(position)) not in again for source, position in live)
    conn.execute(
        parked_events.update()
        .where(
            parked_events.c.projection == name,
            parked_events.c.status.in_(settled_statuses(skips)),
        )
        .values(status="replayed", resolved_at=sa.func.current_timestamp())
    )
    sql_settle_skipped_since(conn, name, skips)
    conn.execute(blocked.delete().where(blocked.c.projection == name))
    conn.execute(failures.delete().where(failures.c.projection == name))
    entries = [
        ParkedEntry(event, event.error, event.detail, 0 if event.held_behind else 1, event.tenant)
        for event in skipped
    ]
    store.park_many(conn, name, entries, replace=True)
    for event in skipped:
        if event.held_behind is None:
            store.hold(conn, name, event, reason=event.error, detail=event.detail, attempts=1)
    return released
