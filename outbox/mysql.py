"""MySQL 8 / MariaDB 10.6+ outbox source: ``GET_LOCK`` leadership, SKIP LOCKED claims, polling."""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from config import SourceSettings
from outbox.source import SqlOutboxSource


class MySqlOutboxSource(SqlOutboxSource):
    def _lock_name(self, conn: sa.Connection) -> str:
        database = conn.execute(sa.text("SELECT DATABASE()")).scalar() or ""
        identity = f"{database}.{self.settings.schema_name or ''}.{self.settings.table}"
        digest = hashlib.blake2b(identity.encode(), digest_size=16).hexdigest()
        return f"readmodel-relay:{digest}"

    def _acquire_leader_lock(self, conn: sa.Connection) -> bool:
        self._lock = self._lock_name(conn)
        got = conn.execute(sa.text("SELECT GET_LOCK(:name, 0)"), {"name": self._lock}).scalar()
        return got == 1

    def _release_leader_lock(self, conn: sa.Connection) -> None:
        conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": self._lock})

    def _now(self) -> sa.ColumnElement[Any]:
        return sa.func.now(6)

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
            f"WHERE {preparer.quote(marked)} < NOW(6) - INTERVAL :micros MICROSECOND "
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


def mysql_ddl(settings: SourceSettings) -> list[str]:
    c = settings.columns
    q = _quote
    table = (
        q(settings.table)
        if not settings.schema_name
        else f"{q(settings.schema_name)}.{q(settings.table)}"
    )
    columns = [f"{q(c.position)} BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY"]
    if c.event_id:
        columns.append(f"{q(c.event_id)} CHAR(36) NOT NULL DEFAULT (UUID())")
    columns += [
        f"{q(c.aggregate_type)} VARCHAR(255) NOT NULL",
        f"{q(c.aggregate_id)} VARCHAR(255) NOT NULL",
        f"{q(c.event_type)} VARCHAR(255) NOT NULL",
        f"{q(c.payload)} JSON NOT NULL",
    ]
    if c.occurred_at:
        columns.append(f"{q(c.occurred_at)} DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)")
    if c.tenant:
        columns.append(f"{q(c.tenant)} VARCHAR(255) NULL")
    if c.headers:
        columns.append(f"{q(c.headers)} JSON NULL")
    if c.dispatched_at:
        columns.append(f"{q(c.dispatched_at)} DATETIME(6) NULL")
    if c.event_id:
        columns.append(f"UNIQUE KEY {q(settings.table + '_event_id_key')} ({q(c.event_id)})")
    if c.dispatched_at:
        columns.append(
            f"KEY {q(settings.table + '_pending_idx')} ({q(c.dispatched_at)}, {q(c.position)})"
        )
    return [
        f"CREATE TABLE IF NOT EXISTS {table} (\n    "
        + ",\n    ".join(columns)
        + "\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    ]


def _quote(identifier: str) -> str:
    return "`" + identifier.replace("`", "``") + "`"
