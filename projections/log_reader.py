"""How projections read the event log: one lane's events, or events at given positions."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from outbox.envelope import Envelope
from outbox.log import EventLog, envelope_from_row
from outbox.schema import event_log, log_heads


class LogReader:
    """Reads :class:`Envelope` objects out of the event log for the projection engine."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.engine = log.engine

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
        """Events of one partition of ``source`` with ``after < position <= target``."""
        c = event_log.c
        query = (
            sa.select(event_log)
            .where(c.source == source, c.position > after, c.position <= target)
            .order_by(c.position)
            .limit(limit)
        )
        if partitions > 1:
            query = query.where(c.key_hash % partitions == partition)
        if event_types:
            query = query.where(c.event_type.in_(list(event_types)))
        with self.engine.connect() as conn:
            return [envelope_from_row(row._mapping) for row in conn.execute(query)]

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
