"""How far behind each projection is: checkpoints, lag, parked events and the last error.

Lag is measured against the event log. In events it is ``log head - checkpoint`` (positions
of the source, so events of other partitions count too: a lane's checkpoint moves to the
head even when no event of the lane is in between); in seconds it is the age of the oldest
log event a lane has not applied, by the log's own clock (``recorded_at``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from outbox.db import describe_db_error
from outbox.errors import StoreError
from outbox.schema import event_log
from projections.engine import ProjectionEngine
from projections.sql_store import SqlStore
from projections.store_tables import failures, parked_events


@dataclass(frozen=True, slots=True)
class LaneStatus:
    source: str
    partition: int
    checkpoint: int
    head: int
    lag_events: int
    lag_seconds: float | None


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    projection: str
    store: str
    lag_events: int
    """The largest lag of its lanes, over every source."""
    lag_seconds: float | None
    parked: int
    last_error: str | None
    last_error_at: str | None
    lanes: list[LaneStatus] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def by_source(self) -> dict[str, tuple[int, float | None]]:
        """``{source: (lag in events, lag in seconds)}``: the worst lane of each source."""
        out: dict[str, tuple[int, float | None]] = {}
        for lane in self.lanes:
            events, seconds = out.get(lane.source, (0, None))
            out[lane.source] = (max(events, lane.lag_events), _max(seconds, lane.lag_seconds))
        return out


def projection_statuses(engine: ProjectionEngine) -> list[ProjectionStatus]:
    """One :class:`ProjectionStatus` per loaded projection, in name order."""
    heads = engine.reader.heads()
    log_engine = engine.reader.engine
    out = []
    for name in sorted(engine.projections):
        projection = engine.projections[name]
        store = engine.store_of(projection)
        done = store.checkpoints(name)
        lanes = engine.lanes(projection)
        positions = {
            (lane.source, done.get((lane.source, lane.partition), 0))
            for lane in lanes
            if done.get((lane.source, lane.partition), 0) < heads.get(lane.source, 0)
        }
        ages = _ages(log_engine, positions)
        lane_statuses = []
        for lane in lanes:
            checkpoint = done.get((lane.source, lane.partition), 0)
            head = heads.get(lane.source, 0)
            lane_statuses.append(
                LaneStatus(
                    source=lane.source,
                    partition=lane.partition,
                    checkpoint=checkpoint,
                    head=head,
                    lag_events=max(0, head - checkpoint),
                    lag_seconds=ages.get((lane.source, checkpoint)) if checkpoint < head else None,
                )
            )
        parked, error, error_at = _problems(store, name)
        seconds = None
        for lane_status in lane_statuses:
            seconds = _max(seconds, lane_status.lag_seconds)
        out.append(
            ProjectionStatus(
                projection=name,
                store=projection.store,
                lag_events=max((s.lag_events for s in lane_statuses), default=0),
                lag_seconds=seconds,
                parked=parked,
                last_error=error,
                last_error_at=error_at,
                lanes=lane_statuses,
            )
        )
    return out


def _ages(engine: sa.Engine, positions: set[tuple[str, int]]) -> dict[tuple[str, int], float]:
    """``{(source, checkpoint): seconds}``: age of the event right after each checkpoint."""
    if not positions:
        return {}
    by_source: dict[str, list[int]] = {}
    for source, checkpoint in positions:
        by_source.setdefault(source, []).append(checkpoint + 1)
    now = datetime.now(UTC)
    out: dict[tuple[str, int], float] = {}
    try:
        with engine.connect() as conn:
            for source, wanted in by_source.items():
                rows = conn.execute(
                    sa.select(event_log.c.position, event_log.c.recorded_at).where(
                        event_log.c.source == source, event_log.c.position.in_(wanted)
                    )
                )
                for position, recorded in rows:
                    out[(source, int(position) - 1)] = max(
                        0.0, (now - _utc(recorded)).total_seconds()
                    )
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read the event log: {describe_db_error(exc)}") from exc
    return out


def _problems(store: Any, projection: str) -> tuple[int, str | None, str | None]:
    """Parked events, and the newest error (a failing handler or the reason of a parking)."""
    if not isinstance(store, SqlStore):
        entries = store.parked(projection)
        last = entries[-1] if entries else None
        return len(entries), last and last.reason, last and last.parked_at.isoformat()
    try:
        with store.engine.connect() as conn:
            parked = conn.execute(
                sa.select(sa.func.count()).where(
                    parked_events.c.projection == projection, parked_events.c.status == "parked"
                )
            ).scalar_one()
            failure = conn.execute(
                sa.select(failures.c.last_error, failures.c.updated_at)
                .where(failures.c.projection == projection)
                .order_by(failures.c.updated_at.desc())
                .limit(1)
            ).first()
            parking = conn.execute(
                sa.select(parked_events.c.reason, parked_events.c.parked_at)
                .where(
                    parked_events.c.projection == projection,
                    parked_events.c.detail.is_not(None),  # not those held behind it
                )
                .order_by(parked_events.c.id.desc())
                .limit(1)
            ).first()
    except SQLAlchemyError as exc:
        raise StoreError(f"{projection}: cannot read the store: {describe_db_error(exc)}") from exc
    candidates = [(row[1] and _utc(row[1]), row[0]) for row in (failure, parking) if row]
    candidates = [(at, text) for at, text in candidates if at is not None]
    if not candidates:
        return int(parked), None, None
    at, text = max(candidates, key=lambda c: c[0])
    return int(parked), text, at.isoformat()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)
