"""Migrations that wait for a table lock on PostgreSQL, bounded.

An ``ALTER TABLE`` needs the table to itself: behind one transaction left open on it, it
waits, and every query of the pipeline on that table queues behind the ALTER. So that the
pipeline never stalls behind ``readmodel migrate``, its DDL runs under a short
``lock_timeout``; :func:`outbox.migrate.upgrade` then rolls back, says who holds the table
(:func:`holders`, from ``pg_locks`` and ``pg_stat_activity`` on the migration's own
connection) and tries again later, a bounded number of times.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Collection
from dataclasses import dataclass
from types import TracebackType

import psycopg
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

# An identifier, quoted (``""`` is one ``"``) or not: an unquoted one is whole (not the end
# of a longer one), starts with a letter (any, for PostgreSQL) or ``_`` and goes on with
# ``$`` too, which SQLAlchemy leaves unquoted.
_START = r'(?<![\w$"])'
_NAME = rf'(?:"(?:[^"]|"")+"|{_START}[^\W\d][\w$]*)'
_TABLE = re.compile(  # a readmodel table (``rm_``), with the schema written before it
    rf'((?:{_NAME}\.)?(?:"rm_(?:[^"]|"")*"|{_START}rm_[\w$]+))'
)

LOCK_TIMEOUT = 5.0
"""Seconds a migration waits for a table lock on PostgreSQL before it rolls back and retries."""
LOCK_RETRIES = 5
LOCK_BACKOFF = 1.0
"""Seconds before a migration's first retry; each later one waits twice as long."""
MAX_LOCK_TIMEOUT = 2147483.647
"""PostgreSQL's largest ``lock_timeout``, in seconds (it counts milliseconds in an int)."""

_WAITED_FOR = (  # as regclass prints it: schema-qualified unless in the search path
    # A row's wait is on its locker's transaction id; its tuple lock names the table.
    "SELECT l.relation::regclass::text, l.locktype = 'tuple', pg_blocking_pids(l.pid) "
    "FROM pg_locks l WHERE l.pid = %s AND l.relation IS NOT NULL "
    "AND (NOT l.granted OR l.locktype = 'tuple') "
    "AND EXISTS (SELECT 1 FROM pg_locks w WHERE w.pid = l.pid AND NOT w.granted) "
    "ORDER BY l.granted LIMIT 1"
)

_HOLDERS = sa.text(
    "SELECT l.pid, string_agg(DISTINCT l.mode, ', ' ORDER BY l.mode) AS modes, "
    "min(a.state) AS state, min(a.application_name) AS application, "
    "extract(epoch FROM clock_timestamp() - min(a.xact_start)) AS open_for "
    "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.relation = to_regclass(:table) AND l.granted "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.pid <> pg_backend_pid() GROUP BY l.pid ORDER BY l.pid"
)


@dataclass(frozen=True, slots=True)
class Holder:
    """A session holding a lock on the table a migration (or a replay) waited for."""

    pid: int
    modes: str
    state: str | None
    application: str | None
    open_for: float | None = None  # seconds its transaction has been open

    def describe(self) -> str:
        what = f"pid {self.pid} ({self.modes}"
        if self.state:
            what += f", {self.state}"
        if self.application:
            what += f", application {self.application!r}"
        if self.open_for is not None:
            what += f", transaction open {self.open_for:.1f} s"
        return what + ")"


def check_lock_timeout(seconds: float) -> None:
    """Raise ``ValueError`` unless ``seconds`` is a ``lock_timeout`` PostgreSQL can take."""
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_LOCK_TIMEOUT):
        raise ValueError(
            f"a lock timeout is 0 (no bound) to {MAX_LOCK_TIMEOUT} seconds, not {seconds!r}"
        )


def set_lock_timeout(conn: sa.Connection, seconds: float) -> None:
    """Bound every lock wait of ``conn``'s transaction (PostgreSQL). ``0``: no bound, set
    so explicitly, whatever ``lock_timeout`` the database or the role sets."""
    if conn.dialect.name == "postgresql":
        check_lock_timeout(seconds)
        milliseconds = 0 if seconds == 0 else max(1, round(seconds * 1000))
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {milliseconds}")


def lock_blocked(exc: BaseException) -> str | None:
    """``"lock_timeout"`` (55P03) or ``"deadlock"`` (40P01) when ``exc`` is PostgreSQL
    giving up a lock wait, which a later attempt may not meet; else ``None``."""
    orig = getattr(exc, "orig", None) or exc.__cause__ or exc
    if isinstance(orig, psycopg.errors.LockNotAvailable):
        return "lock_timeout"
    if isinstance(orig, psycopg.errors.DeadlockDetected):
        return "deadlock"
    return None


class LockWatch:
    """While open, notes the table that ``conn``'s session waits to lock (``pg_locks`` of
    its backend, read every ``interval`` seconds on a connection of its own): once the wait
    is given up the lock is gone, and the statement may name other tables first. Finds
    nothing (``table`` stays ``None``) on other databases or when it cannot connect.

    A wait for a row (``row``) is told apart: the sessions holding a lock on its table are
    then mostly not the one holding the row, so ``blockers`` (``pg_blocking_pids``) says
    which is."""

    def __init__(self, engine: sa.Engine, conn: sa.Connection, interval: float = 0.1) -> None:
        self.table: str | None = None
        self.row = False
        self.blockers: list[int] = []
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if engine.dialect.name == "postgresql":
            self._pid = conn.connection.driver_connection.info.backend_pid  # type: ignore[union-attr]
            self._dsn = engine.url.set(drivername="postgresql").render_as_string(
                hide_password=False
            )

    def __enter__(self) -> LockWatch:
        if hasattr(self, "_pid"):
            self._thread = threading.Thread(target=self._watch, name="migrate-lock-watch")
            self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        if self._stop.wait(self._interval):
            return  # done before anything waited long: no connection made
        try:
            with psycopg.connect(self._dsn, autocommit=True, connect_timeout=5) as conn:
                while True:
                    found = conn.execute(_WAITED_FOR, (self._pid,)).fetchone()
                    if found is not None:
                        self.table, self.row = str(found[0]), bool(found[1])
                        self.blockers = [int(pid) for pid in found[2] or []]
                    if self._stop.wait(self._interval):
                        return
        except psycopg.Error:
            pass  # the table is then told from the statement (table_of)


def table_of(exc: BaseException) -> str | None:
    """The readmodel table the statement that gave up was waiting for, when it names one
    (with its schema when the statement gives one), as the statement writes it: quoted
    names stay quoted (``"my schema"."rm_x"``), for :func:`holders` to look up."""
    for text in (getattr(exc, "statement", None), str(getattr(exc, "orig", "") or exc)):
        found = _TABLE.search(text or "")
        if found:
            return found.group(1)
    return None


def holders(
    engine: sa.Engine, table: str | None, among: Collection[int] | None = None
) -> list[Holder]:
    """The other sessions holding a lock on ``table`` now (of ``among`` only, when given);
    empty when unknown or unreadable. ``table`` is an SQL name, schema-qualified when
    outside the search path (as :class:`LockWatch` and ``regclass`` give it), so a
    projection's own schema is found."""
    if table is None or engine.dialect.name != "postgresql":
        return []
    try:
        with engine.connect() as conn:
            rows = conn.execute(_HOLDERS, {"table": table}).all()
    except SQLAlchemyError:
        return []
    return [
        Holder(
            int(r.pid),
            r.modes,
            r.state,
            r.application,
            None if r.open_for is None else float(r.open_for),
        )
        for r in rows
        if among is None or int(r.pid) in among
    ]
