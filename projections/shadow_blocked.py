"""What a replay's statement gave up waiting for on PostgreSQL: the table whose lock it
waited for and the sessions holding one (:mod:`outbox.migrate_locks`), for the operator to
end or wait for, rather than guess."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from outbox.migrate_locks import LockWatch, holders, lock_blocked
from projections.shadow import ShadowTables
from projections.shadow_constraints import pg_referencing_keys


@dataclass(frozen=True)
class Blocked:
    """Why a drop or a swap gave up: the lock wait it gave up, and on what and whom when
    known."""

    error: str
    waited_for: list[str]  # the tables whose lock it waited for (or may have)
    held_by: list[str]  # the sessions holding a lock on them, described
    waited_ms: int | None = None  # its lock_timeout, when it set one
    row: bool = False  # it waited for a row of that table, not the table

    def describe(self) -> str:
        what = " or ".join(self.waited_for) or "a table"
        what = f"a row of {what}" if self.row else what
        held = f", held by {'; '.join(self.held_by)}" if self.held_by else ""
        timed_out = self.waited_ms is not None and self.error == "lock timeout"
        after = f" after {self.waited_ms} ms" if timed_out else ""  # a deadlock: sooner
        return f"{self.error}{after} waiting for a lock on {what}{held}"


def blocked_on(
    engine: sa.Engine,
    kind: str,
    watch: LockWatch | None,
    candidates: list[str],
    wait: int | None,
) -> Blocked:
    """What a statement gave up on: the table ``watch`` saw it wait for, or (when it saw
    none) those of ``candidates``, the tables it locks, that another session holds a lock
    on. For a row, only the sessions that blocked it are named: the others holding a lock
    on its table (workers of other lanes) did not."""
    seen = watch.table if watch is not None else None
    row = seen is not None and watch is not None and watch.row
    among = watch.blockers if row and watch is not None else None
    waited = []
    held_by: list[str] = []
    for table in [seen] if seen is not None else candidates:
        found = holders(engine, table, among)
        if found or seen is not None:
            waited.append(table)
            held_by += [holder.describe() for holder in found]
    return Blocked(kind.replace("_", " "), waited, held_by, wait, row)


def swap_blocked(
    engine: sa.Engine,
    shadows: ShadowTables,
    exc: BaseException | None,
    watch: LockWatch | None,
    wait: int | None,
) -> Blocked | None:
    """What the swap's transaction gave up on, when ``exc`` is a lock wait given up: the
    table (or row) ``watch`` saw, else those the swap locks (the tables whose foreign keys
    reference the live ones, then the live ones)."""
    kind = lock_blocked(exc) if exc is not None else None
    if kind is None:
        return None
    seen = watch is not None and watch.table is not None
    return blocked_on(engine, kind, watch, [] if seen else _swap_locks(engine, shadows), wait)


def _swap_locks(engine: sa.Engine, shadows: ShadowTables) -> list[str]:
    if engine.dialect.name != "postgresql":
        return []
    try:
        with engine.connect() as conn:
            live = shadows.live_tables(conn)
            outside = sorted({key.table for key in pg_referencing_keys(conn, live)})
            return [*outside, *(sql for _, sql in live)]
    except SQLAlchemyError:
        return []
