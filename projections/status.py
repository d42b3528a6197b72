"""How far behind each projection is: checkpoints, lag, parked events and the last error.

Lag is measured against the event log, per lane (projection, source, partition): its events
are those of the source, in its partition, of the event types the projection subscribes to,
after its checkpoint and up to the source's log head. In events it is how many there are (a
partition whose own events are all applied does not lag when the head moves on with other
partitions' events, or with types the projection does not read); in seconds it is the age of
the oldest of them, on the log's own clock: its ``recorded_at`` against the store's
``now()`` read in the same query, never this host's clock (a worker host whose clock is off
would report a fresh lag as old, or an old one as none). Both come from one query per
projection (with a lane behind its head), reading per source a range of the log's primary
key ``(source, position)``, from its slowest lane's checkpoint to the head: a lane at the
head costs nothing. Past :data:`COUNTED_POSITIONS` positions of a source, every position
counts for each lane (an upper bound, as the figure was before it was counted), so a
projection far behind a long log costs a status call or a scrape no long scan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from outbox.db import describe_db_error
from outbox.errors import StoreError
from outbox.schema import event_log
from projections.api import Projection
from projections.engine import ProjectionEngine
from projections.sql_store import SqlStore
from projections.store import Lane
from projections.store_tables import failures, parked_events


@dataclass(frozen=True, slots=True)
class LaneStatus:
    source: str
    partition: int
    checkpoint: int
    head: int
    lag_events: int
    lag_seconds: float | None
    removed: bool = False
    """A member its tenant registry no longer lists (``status`` keeps it while it lags)."""


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    projection: str
    store: str
    lag_events: int
    """The largest lag of its sources: events of one source its lanes have still to apply."""
    lag_seconds: float | None
    parked: int
    last_error: str | None
    last_error_at: str | None
    lanes: list[LaneStatus] = field(default_factory=list)
    parked_by_source: dict[str, int] = field(default_factory=dict)
    last_error_source: str | None = None
    handlers_overdue: int | None = None
    """Its handlers running past ``engine.handler_timeout`` now, in the live workers
    (``None``: not known, recorded on a Redis broker only: ``workers/overdue_board.py``)."""
    oldest_overdue_seconds: float | None = None
    """How long the first of them to pass its bound has been past it (``None``: none)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def by_source(self) -> dict[str, tuple[int, float | None]]:
        """``{source: (lag in events, lag in seconds)}``: the events of the source its lanes
        have still to apply (their lags added up), and the age of the oldest of them."""
        return _by_source(self.lanes)


def projection_statuses(
    engine: ProjectionEngine, names: Iterable[str] | None = None
) -> list[ProjectionStatus]:
    """One :class:`ProjectionStatus` per loaded projection (of ``names``), in name order."""
    heads = engine.reader.heads()
    log_engine = engine.reader.engine
    out = []
    for name in sorted(engine.projections if names is None else names):
        projection = engine.projections[name]
        store = engine.store_of(projection)
        done = store.checkpoints(name)
        lanes = engine.lanes(projection, None, heads)
        pending = _pending(log_engine, projection, lanes, done, heads)
        lane_statuses = []
        for lane in lanes:
            events, seconds = pending.get((lane.source, lane.partition), (0, None))
            lane_statuses.append(
                LaneStatus(
                    source=lane.source,
                    partition=lane.partition,
                    checkpoint=done.get((lane.source, lane.partition), 0),
                    head=heads.get(lane.source, 0),
                    lag_events=events,
                    lag_seconds=seconds,
                )
            )
        problems = _problems(store, name)
        by_source = _by_source(lane_statuses)
        seconds = None
        for _, lane_seconds in by_source.values():
            seconds = _max(seconds, lane_seconds)
        out.append(
            ProjectionStatus(
                projection=name,
                store=projection.store,
                lag_events=max((e for e, _ in by_source.values()), default=0),
                lag_seconds=seconds,
                parked=sum(problems.parked.values()),
                last_error=problems.error,
                last_error_at=problems.error_at,
                lanes=lane_statuses,
                parked_by_source=problems.parked,
                last_error_source=problems.error_source,
            )
        )
    return out


_SOURCES_AT_ONCE = 200  # sources per query: a registry's hundreds of tenants in a few
COUNTED_POSITIONS = 100_000
"""Positions of a source, past its slowest lane's checkpoint, whose events are counted lane by
lane; every position past them counts for each lane (the figure then an upper bound), and
the age is that of the first event past them when none of a lane's own is within: a
projection far behind a long log costs a status call or a scrape this much of it at most."""


def _pending(
    engine: sa.Engine,
    projection: Projection,
    lanes: Iterable[Lane],
    done: Mapping[tuple[str, int], int],
    heads: Mapping[str, int],
) -> dict[tuple[str, int], tuple[int, float]]:
    """``{(source, partition): (events, seconds)}`` of the lanes with events of their own
    after their checkpoint, up to the head: how many, and the age of the oldest (counted
    within :data:`COUNTED_POSITIONS` of the source's slowest lane). One query for the lanes
    behind their heads (per :data:`_SOURCES_AT_ONCE` sources), each source a range of the
    log's primary key; none when every lane is at its head."""
    behind: dict[str, dict[int, int]] = {}
    for lane in lanes:
        checkpoint = done.get((lane.source, lane.partition), 0)
        if checkpoint < heads.get(lane.source, 0):
            behind.setdefault(lane.source, {})[lane.partition] = checkpoint
    counted = {
        source: min(heads[source], min(checkpoints.values()) + COUNTED_POSITIONS)
        for source, checkpoints in behind.items()
    }
    out: dict[tuple[str, int], tuple[int, float]] = {}
    c = event_log.c
    partitions = max(projection.partitions, 1)
    part = c.key_hash % partitions if partitions > 1 else sa.literal(0)

    def own_events(source: str, checkpoints: dict[int, int]) -> sa.ColumnElement[bool]:
        """The events of ``source``'s lanes behind its head, as each lane reads them."""
        where = [
            c.source == source,
            c.position > min(checkpoints.values()),  # the key's range
            c.position <= counted[source],
            sa.or_(
                *(
                    sa.and_(part == p, c.position > checkpoint)
                    for p, checkpoint in sorted(checkpoints.items())
                )
            ),
        ]
        types = projection.event_types(source)
        if types:  # as LogReader.lane_events filters them
            where.append(c.event_type.in_(types))
        return sa.and_(*where)

    sources = sorted(behind)
    try:
        with engine.connect() as conn:
            for start in range(0, len(sources), _SOURCES_AT_ONCE):  # not one query per source
                chunk = sources[start : start + _SOURCES_AT_ONCE]
                query = (
                    sa.select(
                        c.source, part, sa.func.count(), sa.func.min(c.recorded_at), sa.func.now()
                    )
                    .where(sa.or_(*(own_events(s, behind[s]) for s in chunk)))
                    .group_by(c.source, part)
                )
                for source, partition, count, oldest, now in conn.execute(query):
                    age = max(0.0, (_utc(now) - _utc(oldest)).total_seconds())
                    out[(str(source), int(partition))] = (int(count), age)
            _past_counted(conn, behind, counted, heads, out)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read the event log: {describe_db_error(exc)}") from exc
    return out


def _past_counted(
    conn: sa.Connection,
    behind: Mapping[str, Mapping[int, int]],
    counted: Mapping[str, int],
    heads: Mapping[str, int],
    out: dict[tuple[str, int], tuple[int, float]],
) -> None:
    """Add to each lane of ``out`` the positions past its source's counted ones (all taken
    for its own); a lane with none of its own counted gets the age of the first event past
    them."""
    ages_of: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for source, checkpoints in behind.items():
        for partition, checkpoint in checkpoints.items():
            past = heads[source] - max(checkpoint, counted[source])
            if past <= 0:
                continue
            found = out.get((source, partition))
            if found is None:
                first = (source, max(checkpoint, counted[source]) + 1)
                ages_of.setdefault(first, []).append((source, partition))
                out[(source, partition)] = (past, 0.0)
            else:
                out[(source, partition)] = (found[0] + past, found[1])
    wanted = sorted(ages_of)
    key = sa.tuple_(event_log.c.source, event_log.c.position)
    for start in range(0, len(wanted), _SOURCES_AT_ONCE):
        rows = conn.execute(
            sa.select(
                event_log.c.source, event_log.c.position, event_log.c.recorded_at, sa.func.now()
            ).where(key.in_(wanted[start : start + _SOURCES_AT_ONCE]))
        )
        for source, position, recorded, now in rows:
            age = max(0.0, (_utc(now) - _utc(recorded)).total_seconds())
            for lane in ages_of[(str(source), int(position))]:
                out[lane] = (out[lane][0], age)


def _by_source(lanes: Iterable[LaneStatus]) -> dict[str, tuple[int, float | None]]:
    """``{source: (events, seconds)}``: the events of every lane of the source still to
    apply, and the age of the oldest of them."""
    out: dict[str, tuple[int, float | None]] = {}
    for lane in lanes:
        events, seconds = out.get(lane.source, (0, None))
        out[lane.source] = (events + lane.lag_events, _max(seconds, lane.lag_seconds))
    return out


@dataclass(frozen=True, slots=True)
class _Problems:
    parked: dict[str, int]  # parked events per source
    error: str | None = None  # the newest error: a failing handler or a parking's reason
    error_at: str | None = None
    error_source: str | None = None


def _problems(store: Any, projection: str) -> _Problems:
    """Parked events per source, and the newest error (a failing handler or the reason of a
    parking) with its source."""
    if not isinstance(store, SqlStore):
        entries = store.parked(projection)
        counts: dict[str, int] = {}
        for entry in entries:
            counts[entry.source] = counts.get(entry.source, 0) + 1
        newest = [(_utc(e.parked_at), e.reason, e.source) for e in entries[-1:]]
        failing = getattr(store, "failing", None)  # a document store
        for failure in [] if failing is None else failing(projection):
            newest.append((_utc(failure["updated_at"]), failure["last_error"], failure["source"]))
        if not newest:
            return _Problems(counts)
        at, text, source = max(newest, key=lambda c: c[0])
        return _Problems(counts, text, iso_utc(at), source)
    try:
        with store.engine.connect() as conn:
            parked = conn.execute(
                sa.select(parked_events.c.source, sa.func.count())
                .where(parked_events.c.projection == projection, parked_events.c.status == "parked")
                .group_by(parked_events.c.source)
            ).all()
            failure = conn.execute(
                sa.select(failures.c.last_error, failures.c.updated_at, failures.c.source)
                .where(failures.c.projection == projection)
                .order_by(failures.c.updated_at.desc())
                .limit(1)
            ).first()
            parking = conn.execute(
                sa.select(parked_events.c.reason, parked_events.c.parked_at, parked_events.c.source)
                .where(
                    parked_events.c.projection == projection,
                    parked_events.c.detail.is_not(None),  # not those held behind it
                )
                .order_by(parked_events.c.id.desc())
                .limit(1)
            ).first()
    except SQLAlchemyError as exc:
        raise StoreError(f"{projection}: cannot read the store: {describe_db_error(exc)}") from exc
    counts = {str(source): int(count) for source, count in parked}
    candidates = [(_utc(row[1]), row[0], row[2]) for row in (failure, parking) if row and row[1]]
    if not candidates:
        return _Problems(counts)
    at, text, source = max(candidates, key=lambda c: c[0])
    return _Problems(counts, text, iso_utc(at), source)


def iso_utc(value: datetime | float) -> str:
    """``value`` (a datetime, or seconds since the epoch) in ISO-8601 UTC, as ``status
    --json`` gives every time: ``2026-11-28T10:33:35.123456+00:00``."""
    if isinstance(value, datetime):
        return _utc(value).astimezone(UTC).isoformat()
    return datetime.fromtimestamp(value, UTC).isoformat()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)
