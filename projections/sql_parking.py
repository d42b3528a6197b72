"""Failures, blocked aggregates and parked events of a SQL store.

A handler failure is counted per event (``rm_failures``); after the retries its aggregate
is blocked from that event on (``rm_blocked_aggregates``), and the event and every later one
of the aggregate are parked (``rm_parked_events``) until ``readmodel parked retry`` or
``skip`` releases them. A hold is the aggregate's in the failed event's tenant
(:class:`~projections.store.AggregateKey`), and the events parked under it record that tenant.
:class:`SqlParking` is mixed into :class:`projections.sql_store.SqlStore`.

The parked commands' side (listing, skipping one entry, a retry that failed again) is
:mod:`projections.sql_parked_entries`; a rebuild's swap settles the projection's parked
events with :func:`projections.sql_settle.settle_parked`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa

from outbox.envelope import Envelope
from projections.store import (
    AggregateKey,
    Lane,
    ParkedEntry,
    held_entry,
    merge_holds,
)
from projections.store_tables import blocked, failures, parked_events

__all__ = ["ParkableEvent", "ParkedEntry", "SqlParking", "held_entry"]


class ParkableEvent(Protocol):
    """What a parked-event row records of an event: an :class:`Envelope`, or a replay's
    :class:`~projections.replay_types.SkippedEvent`."""

    @property
    def source(self) -> str: ...
    @property
    def position(self) -> int | None: ...
    @property
    def event_id(self) -> str: ...
    @property
    def event_type(self) -> str: ...
    @property
    def aggregate_type(self) -> str: ...
    @property
    def aggregate_id(self) -> str: ...
    @property
    def tenant(self) -> str | None: ...


class SqlParking:
    """The parking half of a SQL store; needs its ``engine``, ``writer``, ``insert`` and
    ``lock_lane``."""

    engine: sa.Engine
    writer: sa.Engine

    if TYPE_CHECKING:

        def insert(self, table: sa.Table) -> Any: ...

        def lock_lane(self, conn: sa.Connection, lane: Lane) -> int: ...

    def blocked_aggregates(
        self, conn: sa.Connection, lane: Lane
    ) -> dict[AggregateKey, dict[str, Any]]:
        """The lane's projection and source's blocked aggregates: their key -> their row
        (look an event's hold up with :func:`projections.store.hold_of`)."""
        rows = conn.execute(
            sa.select(blocked).where(
                blocked.c.projection == lane.projection, blocked.c.source == lane.source
            )
        )
        return {
            AggregateKey(r.tenant, r.aggregate_type, r.aggregate_id): dict(r._mapping) for r in rows
        }

    def merge_holds(
        self,
        conn: sa.Connection,
        lane: Lane,
        held: dict[AggregateKey, dict[str, Any]],
        keys: list[AggregateKey],
    ) -> tuple[AggregateKey, dict[str, Any]]:
        """Replace the tenants' holds ``keys`` of one aggregate (met by an event naming no
        tenant) by one naming no tenant, in ``held`` and in ``conn``'s transaction; the events
        parked under them are parked under it (:func:`projections.store.merge_holds`)."""
        key, merged = merge_holds(held, keys)
        conn.execute(blocked.delete().where(*_holds_of_id(lane.projection, lane.source, key)))
        conn.execute(
            blocked.insert().values(
                projection=lane.projection,
                source=lane.source,
                tenant="",
                aggregate_type=key.aggregate_type,
                aggregate_id=key.aggregate_id,
                since_position=merged["since_position"],
                reason=merged["reason"],
                detail=merged["detail"],
                attempts=merged["attempts"],
            )
        )
        conn.execute(
            parked_events.update()
            .where(
                parked_events.c.projection == lane.projection,
                parked_events.c.source == lane.source,
                parked_events.c.aggregate_type == key.aggregate_type,
                parked_events.c.aggregate_id == key.aggregate_id,
                parked_events.c.status == "parked",
                parked_events.c.tenant != "",
            )
            .values(tenant="")
        )
        return key, merged

    def park(
        self,
        conn: sa.Connection,
        projection: str,
        event: ParkableEvent,
        *,
        reason: str,
        detail: str | None,
        attempts: int,
        replace: bool = False,
    ) -> None:
        """Write ``event``'s parked-event row (under its own aggregate's hold) in ``conn``'s
        transaction. An existing row is kept as it is, or (``replace``) parked again with the
        new reason and detail."""
        tenant = event.tenant or ""
        self.park_many(
            conn, projection, [ParkedEntry(event, reason, detail, attempts, tenant)], replace
        )

    def park_many(
        self,
        conn: sa.Connection,
        projection: str,
        entries: Sequence[ParkedEntry],
        replace: bool = False,
    ) -> None:
        """:meth:`park` for many events, in one statement."""
        rows = [
            {
                "projection": projection,
                "source": e.event.source,
                "position": e.event.position,
                "event_id": e.event.event_id,
                "aggregate_type": e.event.aggregate_type,
                "aggregate_id": e.event.aggregate_id,
                "tenant": e.tenant,
                "event_type": e.event.event_type,
                "reason": e.reason,
                "detail": e.detail,
                "attempts": e.attempts,
                "status": "parked",
            }
            for e in entries
        ]
        statement = self.insert(parked_events)
        if replace:
            statement = statement.on_conflict_do_update(
                index_elements=["projection", "source", "position"],
                set_={
                    "reason": statement.excluded.reason,
                    "detail": statement.excluded.detail,
                    "tenant": statement.excluded.tenant,
                    "status": "parked",
                    "resolved_at": None,
                },
            )
        else:
            statement = statement.on_conflict_do_nothing()
        if rows:
            conn.execute(statement, rows)

    # -- failures and parking ------------------------------------------------------

    def record_failure(self, lane: Lane, event: Envelope, error: str) -> int:
        statement = self.insert(failures).values(
            projection=lane.projection,
            source=lane.source,
            position=event.position,
            attempts=1,
            last_error=error,
            updated_at=sa.func.current_timestamp(),
        )
        statement = statement.on_conflict_do_update(
            index_elements=["projection", "source", "position"],
            set_={
                "attempts": failures.c.attempts + 1,
                "last_error": statement.excluded.last_error,
                "updated_at": statement.excluded.updated_at,
            },
        )
        with self.writer.begin() as conn:
            conn.execute(statement)
            return int(
                conn.execute(
                    sa.select(failures.c.attempts).where(
                        failures.c.projection == lane.projection,
                        failures.c.source == lane.source,
                        failures.c.position == event.position,
                    )
                ).scalar_one()
            )

    def failing(
        self,
        projection: str,
        source: str | None = None,
        after: int | None = None,
        upto: int | None = None,
    ) -> list[dict[str, Any]]:
        c = failures.c
        query = sa.select(c.source, c.position, c.attempts, c.last_error, c.updated_at).where(
            c.projection == projection
        )
        if source is not None:
            query = query.where(c.source == source)
        if after is not None:
            query = query.where(c.position > after)
        if upto is not None:
            query = query.where(c.position <= upto)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(c.position))
            return [dict(row._mapping) for row in rows]

    def block(self, lane: Lane, event: Envelope, reason: str, detail: str, attempts: int) -> bool:
        with self.writer.begin() as conn:
            # Under the lane's lock: a replay's swap (which takes it too) may have committed
            # since the handler failed, with a model that has this event applied.
            if self.lock_lane(conn, lane) >= (event.position or 0):
                conn.execute(
                    failures.delete().where(
                        failures.c.projection == lane.projection,
                        failures.c.source == lane.source,
                        failures.c.position == event.position,
                    )
                )
                return False
            self.hold(conn, lane.projection, event, reason=reason, detail=detail, attempts=attempts)
            return True

    def hold(
        self,
        conn: sa.Connection,
        projection: str,
        event: ParkableEvent,
        *,
        reason: str,
        detail: str | None,
        attempts: int,
    ) -> None:
        """Block ``event``'s aggregate (in its tenant) from ``event`` on, in ``conn``'s
        transaction (kept as it is when the aggregate is blocked already, or held by a hold
        naming no tenant). An event naming no tenant merges the tenants' holds of its
        aggregate into one naming none, from the earliest of them and itself."""
        lane = Lane(projection, event.source, -1)
        key = AggregateKey(event.tenant or "", event.aggregate_type, event.aggregate_id)
        existing = {
            AggregateKey(r.tenant, r.aggregate_type, r.aggregate_id): dict(r._mapping)
            for r in conn.execute(
                sa.select(blocked).where(*_holds_of_id(projection, event.source, key))
            )
        }
        if key.tenant and key._replace(tenant="") in existing:
            return
        tenants = [k for k in existing if k.tenant]
        if not key.tenant and tenants:
            own = {"since_position": event.position, "reason": reason}
            existing[key] = existing.get(key) or own | {"detail": detail, "attempts": attempts}
            self.merge_holds(conn, lane, existing, [*tenants, key])
            return
        conn.execute(
            self.insert(blocked)
            .values(
                projection=projection,
                source=event.source,
                tenant=event.tenant or "",
                aggregate_type=event.aggregate_type,
                aggregate_id=event.aggregate_id,
                since_position=event.position,
                reason=reason,
                detail=detail,
                attempts=attempts,
            )
            .on_conflict_do_nothing()
        )


def _holds_of_id(projection: str, source: str, aggregate: AggregateKey) -> tuple[Any, ...]:
    """The ``rm_blocked_aggregates`` rows of an aggregate in every tenant."""
    return (
        blocked.c.projection == projection,
        blocked.c.source == source,
        blocked.c.aggregate_type == aggregate.aggregate_type,
        blocked.c.aggregate_id == aggregate.aggregate_id,
    )
