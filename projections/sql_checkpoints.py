"""The checkpoints of a SQL store (``rm_checkpoints``): a lane's position, locked by the
transaction that applies its batch and moved in it, so that the read-model writes and the
checkpoint commit together. :class:`SqlCheckpoints` is mixed into
:class:`projections.sql_store.SqlStore`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg
import sqlalchemy as sa

from projections.store import Lane
from projections.store_tables import blocked, checkpoints

__all__ = ["SqlCheckpoints"]


class SqlCheckpoints:
    """The checkpoint half of a SQL store; needs its ``kind``, ``engine`` and ``insert``."""

    kind: str
    engine: sa.Engine
    reads_log_head: bool

    if TYPE_CHECKING:

        def insert(self, table: sa.Table) -> Any: ...

    def share_log(self, log_engine: Any) -> bool:
        self.reads_log_head = self.kind == "postgresql" and log_engine.url == self.engine.url
        return self.reads_log_head

    def lock_lane(self, conn: sa.Connection, lane: Lane) -> int:
        """Lock the lane's checkpoint row (creating it at 0) until ``conn`` commits; returns
        its position. No batch of the lane can commit meanwhile."""
        return self._open_lane(conn, lane)[0]

    def _open_lane(
        self, conn: sa.Connection, lane: Lane, *, with_head: bool = False
    ) -> tuple[int, bool, int]:
        """Lock the lane's checkpoint row (creating it at 0); also tells, in the same round
        trip, whether any aggregate of the lane's projection and source is blocked, and
        (``with_head``, PostgreSQL, the log in this database) the source's log head."""
        if self.kind == "postgresql":
            # BEGIN and the locking read travel together (psycopg's pipeline mode).
            driver = _driver(conn)
            with driver.pipeline():
                cursor = driver.cursor()
                if with_head:
                    params = (lane.projection, lane.source, lane.source, *_lane_key(lane))
                    cursor.execute(_OPEN_LANE_WITH_HEAD, params)
                else:
                    cursor.execute(_OPEN_LANE, (lane.projection, lane.source, *_lane_key(lane)))
                found = cursor.fetchone()
            if found is not None:
                return int(found[0]), bool(found[1]), int(found[2] or 0) if with_head else 0
        where = (
            checkpoints.c.projection == lane.projection,
            checkpoints.c.source == lane.source,
            checkpoints.c.partition == lane.partition,
        )
        any_blocked = (
            sa.select(blocked.c.aggregate_id)
            .where(blocked.c.projection == lane.projection, blocked.c.source == lane.source)
            .exists()
        )
        query = sa.select(checkpoints.c.position, any_blocked).where(*where).with_for_update()
        row = conn.execute(query).first()
        if row is None:
            conn.execute(
                self.insert(checkpoints)
                .values(
                    projection=lane.projection,
                    source=lane.source,
                    partition=lane.partition,
                    position=0,
                )
                .on_conflict_do_nothing()
            )
            row = conn.execute(query).one()
            if with_head:
                return self._open_lane(conn, lane, with_head=True)
        return int(row[0]), bool(row[1]), 0

    def set_checkpoint(self, conn: sa.Connection, lane: Lane, position: int) -> None:
        """Move the lane's checkpoint in ``conn``'s transaction (lock it first)."""
        if self.kind == "postgresql":  # driver-level: it may be queued in a pipeline
            _driver(conn).cursor().execute(_SET_CHECKPOINT, (position, *_lane_key(lane)))
            return
        conn.execute(
            checkpoints.update()
            .where(
                checkpoints.c.projection == lane.projection,
                checkpoints.c.source == lane.source,
                checkpoints.c.partition == lane.partition,
            )
            .values(position=position, updated_at=sa.func.current_timestamp())
        )

    def checkpoint(self, lane: Lane) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(checkpoints.c.position).where(
                    checkpoints.c.projection == lane.projection,
                    checkpoints.c.source == lane.source,
                    checkpoints.c.partition == lane.partition,
                )
            ).scalar()
        return int(value or 0)

    def checkpoints(self, projection: str) -> dict[tuple[str, int], int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    checkpoints.c.source, checkpoints.c.partition, checkpoints.c.position
                ).where(checkpoints.c.projection == projection)
            )
            return {(source, partition): int(position) for source, partition, position in rows}


_OPEN_LANE = (
    "SELECT c.position, EXISTS (SELECT 1 FROM rm_blocked_aggregates b "
    "WHERE b.projection = %s AND b.source = %s) "
    "FROM rm_checkpoints c WHERE c.projection = %s AND c.source = %s AND c.partition = %s "
    "FOR UPDATE OF c"
)
_OPEN_LANE_WITH_HEAD = (
    "SELECT c.position, EXISTS (SELECT 1 FROM rm_blocked_aggregates b "
    "WHERE b.projection = %s AND b.source = %s), "
    "(SELECT h.head FROM rm_log_heads h WHERE h.source = %s) "
    "FROM rm_checkpoints c WHERE c.projection = %s AND c.source = %s AND c.partition = %s "
    "FOR UPDATE OF c"
)
_SET_CHECKPOINT = (
    "UPDATE rm_checkpoints SET position = %s, updated_at = current_timestamp "
    "WHERE projection = %s AND source = %s AND partition = %s"
)


def _lane_key(lane: Lane) -> tuple[str, str, int]:
    return lane.projection, lane.source, lane.partition


def _driver(conn: sa.Connection) -> psycopg.Connection[Any]:
    return conn.connection.driver_connection  # type: ignore[return-value]
