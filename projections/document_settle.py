"""A document rebuild's swap settles the projection's parked events (:func:`settle_parked`),
as :func:`projections.sql_settle.settle_parked` does for tables: the new generation
contains what the live lanes had parked (the rebuild re-attempted it), so those events are
marked ``replayed`` and their aggregates released; the events the rebuild skipped
(``--skip-errors``) are parked instead, and the aggregate of each failed one is held (in its
tenant: a skipped event's ``tenant`` is that of the hold it is parked under). Events an
operator skipped stay skipped unless the rebuild applied them
(:mod:`projections.replay_skipped`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pymongo.client_session import ClientSession

from projections.document_holds import BLOCKED, PARKED, block_id
from projections.document_parked import FAILURES
from projections.replay_skipped import (
    OperatorSkips,
    document_settle_skipped_since,
    settled_statuses,
)
from projections.replay_types import SkippedEvent
from projections.store import Lane, ParkedEntry, aggregate_key

if TYPE_CHECKING:
    from projections.mongo_store import MongoStore


def settle_parked(
    store: MongoStore,
    session: ClientSession,
    projection: str,
    skipped: Sequence[SkippedEvent],
    skips: OperatorSkips | None = None,
) -> int:
    """Settle in ``session``'s transaction; returns how many live parked events were released
    (not those the rebuild skipped again: they stay parked)."""
    database = store.database
    now = datetime.now(UTC)
    replayed = {"$set": {"status": "replayed", "resolved_at": now}}
    parked = database[PARKED]
    again = {(event.source, event.position) for event in skipped}
    released = sum(
        (d["source"], d["position"]) not in again
        for d in parked.find(
            {"projection": projection, "status": "parked"},
            {"source": 1, "position": 1},
            session=session,
        )
    )
    parked.update_many(
        {"projection": projection, "status": {"$in": list(settled_statuses(skips))}},
        replayed,
        session=session,
    )
    document_settle_skipped_since(database, session, projection, skips, replayed)
    database[BLOCKED].delete_many({"projection": projection}, session=session)
    database[FAILURES].delete_many({"projection": projection}, session=session)
    by_source: dict[str, list[ParkedEntry]] = {}
    for event in skipped:
        attempts = 0 if event.held_behind else 1
        fields = {
            "reason": event.error,
            "detail": event.detail,
            "attempts": attempts,
            "tenant": event.tenant,
        }
        parked.update_one(  # parked before (and just marked replayed): parked again
            {"projection": projection, "source": event.source, "position": event.position},
            {"$set": {**fields, "status": "parked", "parked_at": now, "resolved_at": None}},
            session=session,
        )
        entry = ParkedEntry(event, event.error, event.detail, attempts, event.tenant)
        by_source.setdefault(event.source, []).append(entry)
        if event.held_behind is None:
            key = aggregate_key(event)
            database[BLOCKED].update_one(
                {"_id": block_id(Lane(projection, event.source, -1), key)},
                {  # merged holds (projections.replay_policy): the earliest event's stays
                    "$setOnInsert": {
                        "projection": projection,
                        "source": event.source,
                        "aggregate_type": event.aggregate_type,
                        "aggregate_id": event.aggregate_id,
                        "since_position": event.position,
                        **fields,
                    }
                },
                upsert=True,
                session=session,
            )
    for source, entries in by_source.items():
        store.park(session, Lane(projection, source, -1), entries)
    return int(released)
