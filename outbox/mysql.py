"""MySQL 8 / MariaDB 10.6+ outbox source: ``GET_LOCK`` leadership, SKIP LOCKED claims, polling."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from config import SourceSettings
from outbox import source as sql_source
from outbox.ddl import OutboxTypes, create_table
from outbox.keepalive import mysql_wait_timeout
from outbox.source import SqlOutboxSource


class MySqlOutboxSource(SqlOutboxSource):
    """InnoDB decides row by row whether a row is locked, so ``FOR UPDATE SKIP LOCKED`` can
    skip the first rows of a transaction that commits during the scan and take its later
    ones: one aggregate's events would then be relayed out of order. This source therefore
    picks the batch with a consistent (non-locking) read, which sees a transaction whole or
    not at all, and then locks exactly those rows. The leader runs in READ COMMITTED, so
    its claims and deletes take no gap locks that would deadlock the service's inserts.
    Only the leader claims, so nothing is lost by not skipping locked rows.
    """

    def __init__(self, name: str, settings: SourceSettings, *, engine: sa.Engine | None = None):
        super().__init__(name, settings, engine=engine)
        self.engine = self.engine.execution_options(isolation_level="READ COMMITTED")

    def _fetch_claim(self, conn: sa.Connection, limit: int, lenient: bool) -> Sequence[Any]:
        table = self._resolve()
        position = table.c[self._columns["position"]]
        picked = (
            conn.execute(
                sa.select(position)
                .where(*self._pending_filter(table))
                .order_by(position)
                .limit(limit)
            )
            .scalars()
            .all()
        )
        if not picked:
            return []
        locking = (
            self._claim_query(lenient).where(position.in_(picked)).limit(None).with_for_update()
        )
        return conn.execute(locking).all()

    def _lock_name(self, conn: sa.Connection) -> str:
        database = conn.execute(sa.text("SELECT DATABASE()")).scalar() or ""
        identity = f"{database}.{self.settings.schema_name or ''}.{self.settings.table}"
        digest = hashlib.blake2b(identity.encode(), digest_size=16).hexdigest()
        return f"readmodel-relay:{digest}"

    def _acquire_leader_lock(self, conn: sa.Connection) -> bool:
        self._lock = self._lock_name(conn)
        got = conn.execute(sa.text("SELECT GET_LOCK(:name, 0)"), {"name": self._lock}).scalar()
        return got == 1

    def _on_lead(self, conn: sa.Connection) -> None:
        # The leader's session: a statement that blocks fails and is retried instead of
        # holding the relay for good (MariaDB: any statement; MySQL: its SELECTs).
        seconds = sql_source.CLAIM_TIMEOUT
        for statement in (
            f"SET SESSION max_statement_time = {seconds}",
            f"SET SESSION max_execution_time = {seconds * 1000}",
        ):
            try:
                conn.exec_driver_sql(statement)
                conn.commit()
                break
            except SQLAlchemyError:
                conn.rollback()  # the other server's variable; GET_LOCK is kept (session)
        # A dead host's session (and its GET_LOCK) ends once idle this long; a live leader
        # claims at least every poll_max (outbox/keepalive.py).
        idle = mysql_wait_timeout(self.settings.url, self.settings.poll_max)
        if idle is not None:
            try:
                conn.exec_driver_sql(f"SET SESSION wait_timeout = {idle}")
                conn.commit()
            except SQLAlchemyError:
                pass  # a session gone: try_lead sees it (_same_session) and gives the lead up

    def _release_leader_lock(self, conn: sa.Connection) -> None:
        conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": self._lock})

    def _now(self) -> sa.ColumnElement[Any]:
        return sa.func.utc_timestamp(6)  # DATETIME columns hold UTC (naive is read as UTC)

    def _a_date(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool] | None:
        """Not a zero date (``'0000-00-00'``) nor one with a zero year, month or day, which
        a server whose ``sql_mode`` allows them stores and PyMySQL returns as text."""
        if not self._dates:
            return None
        first = sa.literal_column("'0001-01-01'")
        return sa.and_(column >= first, sa.func.month(column) > 0, sa.func.dayofmonth(column) > 0)

    def purge_dispatched(self) -> int:
        if self.settings.on_dispatch != "mark":
            return 0
        table = self._resolve()
        position = self._columns["position"]
        marked = self._columns["dispatched_at"]
        micros = int(self.settings.retention.total_seconds() * 1_000_000)
        preparer = self.engine.dialect.identifier_preparer
        name = preparer.format_table(table)
        statement = sa.text(
            f"DELETE FROM {name} "
            f"WHERE {preparer.quote(marked)} < UTC_TIMESTAMP(6) - INTERVAL :micros MICROSECOND "
            f"ORDER BY {preparer.quote(position)} LIMIT 10000"
        )
        total = 0
        try:
            while True:
                with self.engine.begin() as conn:
                    count = conn.execute(statement, {"micros": micros}).rowcount
                total += count
                if count < 10_000:
                    return total
        except SQLAlchemyError:
            return total

    def ddl(self) -> list[str]:
        return mysql_ddl(self.settings)


_TYPES = OutboxTypes(
    quote="`",
    position="BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY",
    event_id="CHAR(36) NOT NULL DEFAULT (UUID())",
    text="VARCHAR(255) NOT NULL",
    payload="JSON NOT NULL",
    # UTC whatever the writing session's time_zone (CURRENT_TIMESTAMP would be its local time).
    occurred_at="DATETIME(6) NOT NULL DEFAULT (UTC_TIMESTAMP(6))",
    optional_text="VARCHAR(255) NULL",
    headers="JSON NULL",
    dispatched_at="DATETIME(6) NULL",
)


def mysql_ddl(settings: SourceSettings) -> list[str]:
    c, q = settings.columns, _TYPES.q
    keys = []
    if c.event_id:
        keys.append(f"UNIQUE KEY {q(settings.table + '_event_id_key')} ({q(c.event_id)})")
    if c.dispatched_at:
        keys.append(
            f"KEY {q(settings.table + '_pending_idx')} ({q(c.dispatched_at)}, {q(c.position)})"
        )
    return [create_table(settings, _TYPES, keys, " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")]
