"""Migrations that wait for a table lock on PostgreSQL, bounded.

An ``ALTER TABLE`` needs the table to itself: behind one transaction left open on it, it
waits, and every query of the pipeline on that table queues behind the ALTER. So that the
pipeline never stalls behind ``readmodel migrate``, its DDL runs under a short
``lock_timeout``; :func:`outbox.migrate.upgrade` then rolls back, says who holds the table
(:func:`holders`, from ``pg_locks`` and ``pg_stat_activity`` on the migration's own
connection) and tries again later, a bounded number of times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

_TABLE = re.compile(r"\b(rm_\w+)", re.ASCII)

_HOLDERS = sa.text(
    "SELECT l.pid, string_agg(DISTINCT l.mode, ', ' ORDER BY l.mode) AS modes, "
    "min(a.state) AS state, min(a.application_name) AS application, "
    "min(a.xact_start) AS since "
    "FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
    "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE c.relname = :table AND pg_table_is_visible(c.oid) AND l.granted "
    "AND l.pid <> pg_backend_pid() GROUP BY l.pid ORDER BY l.pid"
)


@dataclass(frozen=True, slots=True)
class Holder:
    """A session holding a lock on the table a migration waited for."""

    pid: int
    modes: str
    state: str | None
    application: str | None

    def describe(self) -> str:
        what = f"pid {self.pid} ({self.modes}"
        if self.state:
            what += f", {self.state}"
        if self.application:
            what += f", application {self.application!r}"
        return what + ")"


def set_lock_timeout(conn: sa.Connection, seconds: float) -> None:
    """Bound every lock wait of ``conn``'s transaction (PostgreSQL; ``0``: no bound)."""
    if conn.dialect.name == "postgresql" and seconds > 0:
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{max(1, round(seconds * 1000))}ms'")


def timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL giving up a lock wait (``lock_timeout``, 55P03)."""
    orig = getattr(exc, "orig", None) or exc.__cause__ or exc
    return isinstance(orig, psycopg.errors.LockNotAvailable)


def table_of(exc: BaseException) -> str | None:
    """The readmodel table the statement that timed out was waiting for, when it names one."""
    for text in (getattr(exc, "statement", None), str(getattr(exc, "orig", "") or exc)):
        found = _TABLE.search(text or "")
        if found:
            return found.group(1)
    return None


def holders(engine: sa.Engine, table: str | None) -> list[Holder]:
    """The other sessions holding a lock on ``table`` now; empty when unknown or unreadable."""
    if table is None or engine.dialect.name != "postgresql":
        return []
    try:
        with engine.connect() as conn:
            rows = conn.execute(_HOLDERS, {"table": table}).all()
    except SQLAlchemyError:
        return []
    return [Holder(int(r.pid), r.modes, r.state, r.application) for r in rows]
