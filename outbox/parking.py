"""Parked events: outbox rows the relay could not turn into events (and, later, events a
projection kept failing on), kept with their reason and raw content until someone acts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from outbox.schema import parked
from outbox.source_groups import SEPARATOR


@dataclass(frozen=True, slots=True)
class ParkedEntry:
    id: int
    kind: str
    source: str
    projection: str | None
    event_id: str | None
    position: int | None
    aggregate_type: str | None
    aggregate_id: str | None
    reason: str
    detail: str | None
    raw: Any
    attempts: int
    status: str
    parked_at: datetime
    resolved_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["parked_at"] = self.parked_at.isoformat()
        data["resolved_at"] = self.resolved_at.isoformat() if self.resolved_at else None
        return data


class ParkedEvents:
    """Read access to the parking table in the read store."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def list(
        self,
        *,
        source: str | None = None,
        kind: str | None = None,
        status: str | None = "parked",
        limit: int = 100,
    ) -> list[ParkedEntry]:
        query = sa.select(parked).order_by(parked.c.id).limit(limit)
        if source is not None:  # a group (no ':') stands for its members too: pos, pos:*
            query = query.where(
                parked.c.source == source
                if SEPARATOR in source
                else sa.or_(
                    parked.c.source == source,
                    parked.c.source.startswith(f"{source}{SEPARATOR}", autoescape=True),
                )
            )
        if kind is not None:
            query = query.where(parked.c.kind == kind)
        if status is not None:
            query = query.where(parked.c.status == status)
        with self.engine.connect() as conn:
            return [ParkedEntry(**row._mapping) for row in conn.execute(query)]

    def skip(self, entry_id: int) -> bool:
        """Mark a parked entry skipped; ``False`` if there is no such parked entry."""
        with self.engine.begin() as conn:
            result = conn.execute(
                parked.update()
                .where(parked.c.id == entry_id, parked.c.status == "parked")
                .values(status="skipped", resolved_at=sa.func.current_timestamp())
            )
        return result.rowcount == 1

    def get(self, entry_id: int) -> ParkedEntry | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(parked).where(parked.c.id == entry_id)).first()
        return None if row is None else ParkedEntry(**row._mapping)
