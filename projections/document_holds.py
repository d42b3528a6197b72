"""Aggregates' holds in a MongoDB store (``rm_blocked_aggregates``): an event whose handler
keeps failing holds its aggregate, in its tenant, and the aggregate's later events are parked
behind it (``rm_parked_events``) until it is retried or skipped.

A hold's ``_id`` is a sub-document naming its aggregate (:func:`block_id`); holds written
before had string ``_id`` values joined with control characters, so holds are looked up by
their fields (:func:`hold_filter`). Documents written before holds had tenants lack
``tenant`` and name none (:func:`projections.store.hold_of`).
"""

from __future__ import annotations

from typing import Any

from pymongo.client_session import ClientSession

from outbox.envelope import Envelope
from outbox.errors import StoreError
from projections.store import AggregateKey, Lane, aggregate_key, merge_holds

BLOCKED = "rm_blocked_aggregates"
PARKED = "rm_parked_events"


def block_id(lane: Lane, aggregate: AggregateKey) -> dict[str, str]:
    """The ``_id`` of an aggregate's hold: a sub-document, so that no two aggregates share
    one whatever their ids hold (string ``_id``s of holds written before, joined with
    control characters, are found by their fields: :func:`hold_filter`)."""
    return {
        "projection": lane.projection,
        "source": lane.source,
        "tenant": aggregate.tenant,
        "aggregate_type": aggregate.aggregate_type,
        "aggregate_id": aggregate.aggregate_id,
    }


def hold_key(document: dict[str, Any]) -> AggregateKey:
    return AggregateKey(
        document.get("tenant") or "", document["aggregate_type"], document["aggregate_id"]
    )


def holds_of_id(lane: Lane, aggregate: AggregateKey) -> dict[str, Any]:
    """The holds of an aggregate in every tenant."""
    return {
        "projection": lane.projection,
        "source": lane.source,
        "aggregate_type": aggregate.aggregate_type,
        "aggregate_id": aggregate.aggregate_id,
    }


def hold_filter(lane: Lane, aggregate: AggregateKey) -> dict[str, Any]:
    """The hold of ``aggregate`` (one naming no tenant may lack ``tenant``: written before
    holds had tenants)."""
    tenant = aggregate.tenant if aggregate.tenant else {"$in": ["", None]}
    return holds_of_id(lane, aggregate) | {"tenant": tenant}


def hold_aggregate(
    database: Any,
    session: ClientSession,
    lane: Lane,
    event: Envelope,
    reason: str,
    detail: str,
    attempts: int,
) -> None:
    """Hold ``event``'s aggregate in its tenant from ``event`` on (kept as it is when held
    already, or held by a hold naming no tenant); an event naming no tenant merges the
    tenants' holds of its aggregate into one naming none."""
    key = aggregate_key(event)
    existing = {
        hold_key(d): d for d in database[BLOCKED].find(holds_of_id(lane, key), session=session)
    }
    if key in existing or (key.tenant and key._replace(tenant="") in existing):
        return
    hold = {
        "projection": lane.projection,
        "source": event.source,
        "tenant": key.tenant,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "since_position": event.position,
        "reason": reason,
        "detail": detail,
        "attempts": attempts,
    }
    tenants = [k for k in existing if k.tenant]
    if not key.tenant and tenants:
        existing[key] = hold
        merge_blocked(database, session, lane, existing, [*tenants, key])
        return
    # An insert's duplicate-key error would abort the transaction: blocked already (by
    # another worker) keeps the block as it is.
    written = database[BLOCKED].update_one(
        {"_id": block_id(lane, key)}, {"$setOnInsert": hold}, upsert=True, session=session
    )
    if written.upserted_id is None:
        found = database[BLOCKED].find_one({"_id": block_id(lane, key)}, session=session)
        if found is None or hold_key(found) != key or found["source"] != event.source:
            raise StoreError(
                f"{lane.projection}: the hold of {key.aggregate_type} "
                f"{key.aggregate_id!r} (tenant {key.tenant!r}) is another aggregate's"
            )


def merge_blocked(
    database: Any,
    session: ClientSession,
    lane: Lane,
    held: dict[AggregateKey, dict[str, Any]],
    keys: list[AggregateKey],
) -> tuple[AggregateKey, dict[str, Any]]:
    """Replace the tenants' holds ``keys`` of one aggregate (met by an event naming no
    tenant) by one naming no tenant, in ``held`` and in the session's transaction; the events
    parked under them are parked under it (:func:`projections.store.merge_holds`)."""
    key, merged = merge_holds(held, keys)
    merged["_id"] = block_id(lane, key)
    database[BLOCKED].delete_many(holds_of_id(lane, key), session=session)
    database[BLOCKED].insert_one(merged, session=session)
    database[PARKED].update_many(
        holds_of_id(lane, key) | {"status": "parked"}, {"$set": {"tenant": ""}}, session=session
    )
    return key, merged


def blocked_aggregates(
    database: Any, session: ClientSession, projection: str, source: str
) -> dict[AggregateKey, dict[str, Any]]:
    """A projection's holds of one source, by key; a document without ``tenant`` (written
    before holds had tenants) names no tenant."""
    found = database[BLOCKED].find({"projection": projection, "source": source}, session=session)
    holds = {}
    for document in found:
        document["tenant"] = document.get("tenant") or ""
        key = AggregateKey(document["tenant"], document["aggregate_type"], document["aggregate_id"])
        holds[key] = document
    return holds
