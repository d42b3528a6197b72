"""Parked events: outbox rows the relay could not turn into events (and, later, events a
projection kept failing on), kept with their reason and raw content until someone acts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from outbox.commits import begin_telling_commit
from outbox.db import _json_dumps, _json_loads
from outbox.errors import CommitInterrupted, CommitUncertain
from outbox.rows import MalformedRow
from outbox.schema import PARKED_OUTBOX_ROW, parked
from outbox.source_groups import SEPARATOR


@dataclass
class PurgeProgress:
    """How far a purge of skipped entries got, filled in as it goes (a MongoDB store commits
    chunk by chunk), so that a purge an error stops partway still tells exactly what it
    deleted and what it kept."""

    deleted: int = 0
    """Entries deleted, counted once their delete committed."""
    handled: int = 0
    """Entry ids dealt with for good: deleted, or found not skipped (never deleted)."""
    uncertain: int = 0
    """Entry ids whose delete the error cut at its commit: deleted or kept, nobody knows
    until the entries are listed again."""


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
        limit: int | None = 100,
    ) -> list[ParkedEntry]:
        query = sa.select(parked).order_by(parked.c.id).limit(limit)
        if source is not None:
            query = query.where(_of_source(source))
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

    def skip_many(self, entry_ids: Sequence[int]) -> int:
        """:meth:`skip` for many entries, a statement per 5000; returns how many were
        parked and are now skipped."""
        ids = sorted(set(entry_ids))
        skipped = 0
        with self.engine.begin() as conn:
            for start in range(0, len(ids), 5000):
                skipped += conn.execute(
                    parked.update()
                    .where(parked.c.id.in_(ids[start : start + 5000]), parked.c.status == "parked")
                    .values(status="skipped", resolved_at=sa.func.current_timestamp())
                ).rowcount
        return skipped

    def purge_skipped(self, entry_ids: Sequence[int], progress: PurgeProgress | None = None) -> int:
        """Delete those of ``entry_ids`` that are skipped (never one of another status), in
        one transaction: counted in ``progress`` once committed."""
        ids = sorted(set(entry_ids))
        deleted = 0
        progress = PurgeProgress() if progress is None else progress
        try:
            with begin_telling_commit(self.engine, "cannot purge skipped parked events") as conn:
                for start in range(0, len(ids), 5000):
                    deleted += conn.execute(
                        parked.delete().where(
                            parked.c.id.in_(ids[start : start + 5000]), parked.c.status == "skipped"
                        )
                    ).rowcount
        except (CommitUncertain, CommitInterrupted):
            progress.uncertain += len(ids)
            raise
        progress.deleted += deleted  # one transaction: all of it, once committed
        progress.handled += len(ids)
        return deleted

    def get(self, entry_id: int) -> ParkedEntry | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(parked).where(parked.c.id == entry_id)).first()
        return None if row is None else ParkedEntry(**row._mapping)


def _of_source(source: str) -> sa.ColumnElement[bool]:
    """Entries of ``source``; a group (no ':') stands for its members too: pos, pos:*."""
    if SEPARATOR in source:
        return parked.c.source == source
    return sa.or_(
        parked.c.source == source,
        parked.c.source.startswith(f"{source}{SEPARATOR}", autoescape=True),
    )


def not_parked_yet(
    conn: sa.Connection, source: str, malformed: Sequence[MalformedRow]
) -> list[MalformedRow]:
    """``malformed`` without the rows an entry still parked already stands for."""
    if not malformed:
        return []
    ids = sorted({row.event_id for row in malformed if row.event_id is not None})
    same_id = [parked.c.event_id.in_(ids[i : i + 5000]) for i in range(0, len(ids), 5000)]
    if any(row.event_id is None for row in malformed):
        same_id.append(parked.c.event_id.is_(None))
    query = sa.select(
        parked.c.event_id, parked.c.aggregate_type, parked.c.aggregate_id, parked.c.raw
    ).where(
        parked.c.kind == PARKED_OUTBOX_ROW,
        parked.c.source == source,
        parked.c.status == "parked",
        sa.or_(*same_id),
    )
    standing: dict[tuple[Any, ...], list[Any]] = {}
    for event_id, aggregate_type, aggregate_id, raw in conn.execute(query):
        raw = _json_loads(raw) if isinstance(raw, str | bytes) else raw
        standing.setdefault((event_id, aggregate_type, aggregate_id), []).append(raw)
    if not standing:
        return list(malformed)
    fresh: list[MalformedRow] = []
    for row in malformed:
        raws = standing.get((row.event_id, row.aggregate_type, row.aggregate_id), [])
        raw = _json_loads(_json_dumps(row.raw))  # as the table gives it back
        if raw in raws:
            raws.remove(raw)  # one entry stands for one row
        else:
            fresh.append(row)
    return fresh
