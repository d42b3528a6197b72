"""Rows the event log has already: a row delivered again (the relay crashed after appending
but before acknowledging) is skipped as a duplicate; a row whose ``event_id`` the log holds
for another event (another aggregate, type or payload: the outbox reused the id, as
position-derived ids do after its sequence restarts) is a new event, parked with that
reason."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from outbox.json_numbers import same_json
from outbox.rows import LogRecord, MalformedRow, json_safe
from outbox.schema import event_log


def without_logged(
    conn: sa.Connection, source: str, records: Sequence[LogRecord]
) -> tuple[list[LogRecord], int, list[MalformedRow]]:
    """``(records not in the log yet, how many were, records reusing a logged event's
    id for another event)``."""
    if not records:
        return [], 0, []
    ids = [r.event_id for r in records]
    c = event_log.c
    logged: dict[str, tuple[Any, ...]] = {}
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        query = sa.select(
            c.event_id,
            c.position,
            c.aggregate_type,
            c.aggregate_id,
            c.event_type,
            sa.cast(c.payload, sa.Text),  # as text: parsed, big numbers would round
        ).where(c.source == source, c.event_id.in_(chunk))
        for event_id, *rest in conn.execute(query):
            logged[event_id] = tuple(rest)
    fresh: list[LogRecord] = []
    reused: list[MalformedRow] = []
    firsts: dict[str, LogRecord] = {}
    duplicates = 0
    for record in records:
        earlier = logged.get(record.event_id)
        first = firsts.get(record.event_id)
        if earlier is not None:
            position, *event = earlier
            if _same_event(record, event):
                duplicates += 1
            else:
                reused.append(_reused(record, f"log position {position}", event))
        elif first is not None:
            if _same_event(record, _event_of(first)):
                duplicates += 1
            else:
                reused.append(_reused(record, "the same batch", _event_of(first)))
        else:
            firsts[record.event_id] = record
            fresh.append(record)
    return fresh, duplicates, reused


def _event_of(record: LogRecord) -> list[Any]:
    return [record.aggregate_type, record.aggregate_id, record.event_type, record.payload]


def _same_event(record: LogRecord, event: Sequence[Any]) -> bool:
    """Whether ``record`` is the logged ``event`` (aggregate type and id, event type,
    payload text) delivered again."""
    aggregate_type, aggregate_id, event_type, payload = event
    if (record.aggregate_type, record.aggregate_id, record.event_type) != (
        aggregate_type,
        aggregate_id,
        event_type,
    ):
        return False
    return same_json(record.payload, payload)


def _reused(record: LogRecord, where: str, event: Sequence[Any]) -> MalformedRow:
    aggregate_type, aggregate_id, event_type, _ = event
    return MalformedRow(
        source_position=record.source_position,
        event_id=record.event_id,
        reason=(
            f"event id {record.event_id!r} is already in the log ({where}) for another "
            f"event ({event_type} of {aggregate_type}:{aggregate_id}): the outbox reused the "
            f"id (position-derived ids repeat when its sequence restarts; map an event_id "
            f"column with unique ids)"
        ),
        raw={
            "position": json_safe(record.source_position),
            "event_id": record.event_id,
            "aggregate_type": record.aggregate_type,
            "aggregate_id": record.aggregate_id,
            "event_type": record.event_type,
            "payload": orjson.Fragment(record.payload),  # as written: big numbers kept
            "occurred_at": json_safe(record.occurred_at),
            "tenant": record.tenant,
            "headers": None if record.headers is None else orjson.Fragment(record.headers),
        },
        aggregate_type=record.aggregate_type,
        aggregate_id=record.aggregate_id,
    )
