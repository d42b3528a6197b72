"""How projections read the event log: one lane's events, or events at given positions.

A lane is one partition of a source, but partitions are not stored apart: reading each
lane with a ``key_hash % partitions`` filter would make the database scan every source
range once per partition. :meth:`LogReader.lane_events` therefore reads a source range
once (all partitions) and keeps the last few ranges in memory for the other lanes, which
are triggered by the same messages and ask for the same ranges moments later. This is
safe because the log is immutable below its head: positions are gap-free, assigned under
the head row's lock and committed with it, and a lane never asks beyond a head it has
read; so a cached range is exactly what the database would return again.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import sqlalchemy as sa

from outbox.envelope import Envelope
from outbox.json_numbers import loads_exact
from outbox.log import EventLog, envelope_from_row
from outbox.schema import event_log, log_heads

_CACHED_RANGES = 3  # per (source, event types): lanes run close together, a few ranges suffice
_MIN_RANGE = 1000

# The log's columns in the order envelope_from_pg_row() unpacks them (JSON as text).
PG_EVENT_COLUMNS = (
    "position, event_id, tenant, aggregate_type, aggregate_id, key_hash, event_type, "
    "payload::text, headers::text, occurred_at"
)


@dataclass(slots=True)
class _Range:
    """The log's events of one source with ``after < position <= upto`` (of some types)."""

    after: int
    upto: int
    positions: list[int]
    events: list[tuple[int, Any]]  # (key_hash, Envelope or a raw PostgreSQL row)
    lanes: dict[int, list[tuple[list[int], list[Any]]]] = field(default_factory=dict)

    def lane(self, partitions: int, partition: int) -> tuple[list[int], list[Any]]:
        """``(positions, events)`` of one partition, split once per partition count, so
        that each lane walks its own events only."""
        if partitions <= 1:
            partitions, partition = 1, 0
        split = self.lanes.get(partitions)
        if split is None:  # two lanes may both split: the same result, the last one kept
            split = [([], []) for _ in range(partitions)]
            for position, (key_hash, event) in zip(self.positions, self.events, strict=True):
                positions, events = split[key_hash % partitions]
                positions.append(position)
                events.append(event)
            self.lanes[partitions] = split
        return split[partition]


class LogReader:
    """Reads :class:`Envelope` objects out of the event log for the projection engine."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.engine = log.engine
        self._lock = threading.Lock()
        self._ranges: dict[tuple[str, tuple[str, ...]], list[_Range]] = {}

    def lane_events(
        self,
        source: str,
        after: int,
        target: int,
        *,
        partitions: int,
        partition: int,
        event_types: Sequence[str],
        limit: int,
    ) -> list[Envelope]:
        """Events of one partition of ``source`` with ``after < position <= target``: the
        first ``limit`` of them, or all of them when fewer."""
        types = tuple(sorted(event_types))
        span = max(limit * max(partitions, 1), _MIN_RANGE)
        out: list[Envelope] = []
        position = after
        while position < target:
            block = self._range(source, types, position, target, span)
            positions, events = block.lane(partitions, partition)
            start = bisect.bisect_right(positions, position)
            stop = min(bisect.bisect_right(positions, target), start + limit - len(out))
            for event in events[start:stop]:
                out.append(
                    event if isinstance(event, Envelope) else envelope_from_pg_row(source, event)
                )
            if len(out) >= limit:
                return out
            position = min(block.upto, target)
        return out

    def _range(
        self, source: str, types: tuple[str, ...], after: int, target: int, span: int
    ) -> _Range:
        """A cached range holding position ``after + 1``, or a new one read from the log."""
        key = (source, types)
        with self._lock:
            ranges = self._ranges.setdefault(key, [])
            for block in ranges:
                if block.after <= after < block.upto:
                    return block
            block = self._read_range(source, types, after, min(target, after + span))
            ranges.append(block)
            if len(ranges) > _CACHED_RANGES:
                ranges.pop(0)
            return block

    def _read_range(self, source: str, types: tuple[str, ...], after: int, upto: int) -> _Range:
        if self.engine.dialect.name == "postgresql":
            rows = self._read_postgresql(source, types, after, upto)
        else:
            c = event_log.c
            query = (
                sa.select(event_log)
                .where(c.source == source, c.position > after, c.position <= upto)
                .order_by(c.position)
            )
            if types:
                query = query.where(c.event_type.in_(list(types)))
            with self.engine.connect() as conn:
                rows = [
                    (int(r.key_hash), envelope_from_row(r._mapping)) for r in conn.execute(query)
                ]
        positions = [row[1].position if isinstance(row[1], Envelope) else row[1][0] for row in rows]
        return _Range(after, upto, positions, rows)

    def _read_postgresql(
        self, source: str, types: tuple[str, ...], after: int, upto: int
    ) -> list[tuple[int, Any]]:
        """Raw rows from the driver's cursor, made envelopes only when a lane takes them."""
        statement = (
            f"SELECT {PG_EVENT_COLUMNS} FROM rm_event_log "
            "WHERE source = %s AND position > %s AND position <= %s"
        )
        params: list[Any] = [source, after, upto]
        if types:
            statement += " AND event_type = ANY(%s)"
            params.append(list(types))
        statement += " ORDER BY position"
        with self.engine.connect() as conn:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            rows = cursor.execute(statement, params).fetchall()
        return [(row[5], row) for row in rows]

    def at_positions(self, source: str, positions: Sequence[int]) -> list[Envelope]:
        query = (
            sa.select(event_log)
            .where(event_log.c.source == source, event_log.c.position.in_(list(positions)))
            .order_by(event_log.c.position)
        )
        with self.engine.connect() as conn:
            return [envelope_from_row(row._mapping) for row in conn.execute(query)]

    def heads(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(log_heads.c.source, log_heads.c.head))
            return {source: int(head) for source, head in rows}


_ENVELOPE_FIELDS = frozenset(Envelope.model_fields)
_new = object.__new__
_set = object.__setattr__


def envelope_from_pg_row(source: str, row: tuple[Any, ...]) -> Envelope:
    """An :class:`Envelope` from a raw row of :data:`PG_EVENT_COLUMNS`, built as
    ``model_construct`` would but for a fraction of its cost: the row was validated when it
    was appended."""
    (position, event_id, tenant, aggregate_type, aggregate_id, _, event_type, payload, headers,
     occurred_at) = row  # fmt: skip
    if occurred_at is not None and occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=UTC)
    envelope = _new(Envelope)
    _set(
        envelope,
        "__dict__",
        {
            "event_id": event_id,
            "source": source,
            "tenant": tenant,
            "aggregate_type": aggregate_type,
            "aggregate_id": aggregate_id,
            "event_type": event_type,
            "payload": loads_exact(payload),
            "headers": (loads_exact(headers) or {}) if headers else {},
            "occurred_at": occurred_at,
            "position": position,
        },
    )
    _set(envelope, "__pydantic_fields_set__", set(_ENVELOPE_FIELDS))
    _set(envelope, "__pydantic_extra__", None)
    _set(envelope, "__pydantic_private__", None)
    return envelope
