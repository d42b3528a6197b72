"""An outbox source: one service database and its outbox table.

A relay talks to a source through four calls: become its leader, claim a batch
of committed rows (locking them), acknowledge them once the log has them, or
release them. The engine-specific parts (leader lock, wake-ups, purge SQL, DDL)
live in ``outbox/postgres.py``, ``outbox/mysql.py`` and ``outbox/sqlite.py``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DataError, SQLAlchemyError

from config import SourceSettings
from outbox.db import CONNECT_TIMEOUT, create_engine, describe_db_error, redact_dsn
from outbox.errors import NotLeaderError, SourceError
from outbox.keepalive import client_keepalives
from outbox.rows import FIELDS, IdFormat
from outbox.source_groups import group_of
from outbox.source_table import qualified_name, read_shape
from outbox.sql_pending import oldest_columns, oldest_of
from outbox.timestamps import as_utc

CLAIM_TIMEOUT = 60  # seconds, PostgreSQL: a leader's statement blocked (a locked table)


@dataclass(frozen=True, slots=True)
class PendingStats:
    """What waits in an outbox: undelivered rows and the age of the oldest (``None`` if unknown)."""

    undelivered: int
    oldest_age_seconds: float | None


class OutboxSource(ABC):
    """The relay's view of one outbox table."""

    def __init__(self, name: str, settings: SourceSettings) -> None:
        self.name = name
        self.settings = settings

    @abstractmethod
    def try_lead(self) -> bool:
        """Try to become this source's active relay; ``True`` while leading."""

    def try_lead_once(self) -> bool:
        """:meth:`try_lead` for a one-shot drain (``relay --once``): ``False`` only when
        another relay is alive. A session lock is let go when its relay dies, so one try
        tells; a lease (MongoDB) is waited on until it is seen renewed or run out."""
        return self.try_lead()

    @abstractmethod
    def claim(self, limit: int) -> list[tuple[Any, ...]]:
        """Lock and return up to ``limit`` committed, undelivered rows in outbox order.

        Rows are shaped like :data:`outbox.rows.FIELDS`. They stay locked until
        :meth:`acknowledge` or :meth:`release`.
        """

    @abstractmethod
    def acknowledge(self, positions: Sequence[Any]) -> None:
        """Delete or mark the claimed rows (``on_dispatch``) and commit."""

    @abstractmethod
    def release(self) -> None:
        """Give the claimed rows back untouched."""

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Sleep up to ``timeout`` seconds, returning early when rows may have arrived."""
        stop.wait(timeout)

    def purge_dispatched(self) -> int:
        """Delete marked rows past the retention; returns how many."""
        return 0

    @abstractmethod
    def pending(self) -> PendingStats:
        """Undelivered rows and the oldest one's age (a read-only query, leader or not)."""

    @property
    @abstractmethod
    def column_names(self) -> dict[str, str]:
        """Field of :data:`outbox.rows.FIELDS` -> the outbox column or document field it comes
        from ('' for an optional one the outbox does not have)."""

    @property
    def id_formats(self) -> dict[str, IdFormat]:
        """Id field -> how its binary column becomes text (:data:`outbox.rows.IdFormat`);
        fields not named are read as text."""
        return {}

    @property
    def id_hints(self) -> dict[str, str]:
        """Id field -> what to suggest when its binary value is no text (see ``binary_ids``)."""
        return {}

    @property
    def binary_ids_rule(self) -> str | None:
        """The ``binary_ids`` rule this source's ids are made by, which the event log records
        per source; ``None`` where the setting does not apply (MongoDB)."""
        return self.settings.binary_ids

    def reread_columns(self) -> None:
        """Read the outbox's column types again (one changed since they were read)."""
        return None

    @abstractmethod
    def ddl(self) -> list[str]:
        """Statements that create this source's outbox table, indexes and wake-up trigger."""

    @abstractmethod
    def install(self) -> None:
        """Create what :meth:`ddl` describes (``readmodel outbox init``)."""

    @abstractmethod
    def close(self) -> None:
        """Release leadership and connections."""

    @property
    def display_url(self) -> str:
        """The DSN for messages and logs, password masked; a tenant's (a member of a source
        group) by where it is only, without user or query (tenant credentials are not
        logged)."""
        return redact_dsn(self.settings.url, location=group_of(self.name) is not None)


def bounded_connect(url: str) -> dict[str, Any]:
    """Connect arguments giving up on a server that never answers (PostgreSQL, MySQL),
    unless the DSN sets its own ``connect_timeout``; on PostgreSQL, libpq's TCP keepalives
    too (:mod:`outbox.keepalive`), those the DSN sets left to it."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() not in {"postgresql", "postgres", "mysql", "mariadb"}:
        return {}
    keepalives = client_keepalives(url)
    if "connect_timeout" in parsed.query:
        return keepalives
    return {"connect_timeout": CONNECT_TIMEOUT, **keepalives}


class SqlOutboxSource(OutboxSource):
    """An outbox table reached through SQLAlchemy Core; engines override the hooks below.

    The leader lock is a session lock taken on the same connection that claims
    rows, so a relay that loses its connection loses its row locks and its
    leadership together, and a standby can never claim past rows it still holds.
    """

    supports_skip_locked = True

    def __init__(self, name: str, settings: SourceSettings, *, engine: sa.Engine | None = None):
        super().__init__(name, settings)
        self.engine = engine or create_engine(
            settings.url, pool_size=2, max_overflow=2, connect_args=bounded_connect(settings.url)
        )
        self._conn: sa.Connection | None = None
        self._session: Any = None  # the DBAPI connection holding the leader lock
        self._table: sa.TableClause | None = None
        self._columns: dict[str, str] = {}
        self._id_formats: dict[str, IdFormat] = {}
        self._id_hints: dict[str, str] = {}
        self._epochs = False
        self._dates = False
        self._claim: sa.Select[Any] | None = None

    # -- table shape ---------------------------------------------------------------

    @property
    def column_names(self) -> dict[str, str]:
        """Field -> actual outbox column ('' for an optional column the table lacks)."""
        self._resolve()
        return self._columns

    @property
    def id_formats(self) -> dict[str, IdFormat]:
        """Decided once per column, from its declared type (see ``binary_ids``)."""
        self._resolve()
        return self._id_formats

    @property
    def id_hints(self) -> dict[str, str]:
        self._resolve()
        return self._id_hints

    def reread_columns(self) -> None:
        self._table = None
        self._claim = None
        self._resolve()

    def _resolve(self) -> sa.TableClause:
        if self._table is not None:
            return self._table
        shape = read_shape(self.name, self.settings, self.engine, self.display_url)
        self._columns, self._id_formats = shape.columns, shape.id_formats
        self._id_hints, self._table = shape.id_hints, shape.table
        self._epochs, self._dates = shape.epoch_timestamps, shape.date_timestamps
        return self._table

    def install(self) -> None:
        try:
            with self.engine.begin() as conn:
                for statement in self.ddl():
                    conn.exec_driver_sql(statement)
        except SQLAlchemyError as exc:
            raise SourceError(
                f"source {self.name!r} ({self.display_url}): {describe_db_error(exc)}"
            ) from exc

    def _qualified(self) -> str:
        return qualified_name(self.settings)

    def _pending_filter(self, table: sa.TableClause) -> list[sa.ColumnElement[bool]]:
        if self.settings.on_dispatch == "mark":
            return [table.c[self._columns["dispatched_at"]].is_(None)]
        return []

    def _fetch_claim(self, conn: sa.Connection, limit: int, lenient: bool) -> Sequence[Any]:
        """Lock and fetch the next rows (one round trip: ``FOR UPDATE SKIP LOCKED``)."""
        return conn.execute(self._claim_query(lenient), {"limit": limit}).all()

    def _pipelined(self, conn: sa.Connection) -> AbstractContextManager[Any]:
        """A block whose statements (none may return rows) and commit travel together;
        engines without a pipeline run them one by one."""
        return nullcontext()

    def _claim_query(self, lenient: bool = False) -> sa.Select[Any]:
        if lenient:
            return self._build_claim_query(lenient=True)
        if self._claim is None:
            self._claim = self._build_claim_query()
        return self._claim

    def _build_claim_query(self, lenient: bool = False) -> sa.Select[Any]:
        table = self._resolve()
        selected: list[Any] = []
        for f in FIELDS:
            column = self._columns.get(f)
            if not column:
                selected.append(sa.null().label(f))
            elif lenient and f == "occurred_at":
                selected.append(sa.cast(table.c[column], sa.Text).label(f))
            else:
                selected.append(table.c[column])
        position = table.c[self._columns["position"]]
        query = (
            sa.select(*selected)
            .where(*self._pending_filter(table))
            .order_by(position)
            .limit(sa.bindparam("limit"))
        )
        if self.supports_skip_locked:
            query = query.with_for_update(skip_locked=True)
        return query

    # -- leadership and claims -----------------------------------------------------

    def try_lead(self) -> bool:
        if self._conn is not None:
            return True
        self._resolve()
        conn = self._connect_for_leading()
        try:
            leading = self._acquire_leader_lock(conn)
            conn.commit()
        except SQLAlchemyError as exc:
            self._discard(conn)
            raise SourceError(
                f"source {self.name!r} ({self.display_url}): {describe_db_error(exc)}"
            ) from exc
        except BaseException:
            self._discard(conn)
            raise
        if not leading:
            self._discard(conn)
            return False
        self._conn = conn
        self._session = conn.connection.dbapi_connection
        self._on_lead(conn)
        if not self._same_session(conn):
            self.lose_leadership()
            raise SourceError(
                f"source {self.name!r}: the session that took the lead ended while setting it up"
            )
        return True

    @property
    def leading(self) -> bool:
        return self._conn is not None

    def _connect_for_leading(self) -> sa.Connection:
        try:
            return self.engine.connect()
        except SQLAlchemyError as exc:
            raise SourceError(
                f"source {self.name!r} ({self.display_url}): {describe_db_error(exc)}"
            ) from exc

    def _leader(self) -> sa.Connection:
        conn = self._conn
        if conn is None:
            raise NotLeaderError(f"source {self.name!r}: this relay is not the leader")
        if not self._same_session(conn):
            self.lose_leadership()
            raise NotLeaderError(f"source {self.name!r}: the leader's session ended (and its lock)")
        return conn

    def _same_session(self, conn: sa.Connection) -> bool:
        """Whether ``conn`` is still on the session that took the leader lock. SQLAlchemy
        reconnects a connection used again after a disconnect was rolled back, silently: the
        new session holds no lock (another relay may lead by now)."""
        return not conn.invalidated and conn.connection.dbapi_connection is self._session

    def claim(self, limit: int) -> list[tuple[Any, ...]]:
        conn = self._leader()
        try:
            try:
                rows = self._fetch_claim(conn, limit, lenient=False)
            except DataError:
                # A value the driver cannot load (a timestamp 'infinity' or BC date): claim
                # again with the timestamp as text, so that row is parked, not stuck.
                conn.rollback()
                rows = self._fetch_claim(conn, limit, lenient=True)
            return [tuple(row) for row in rows]
        except SQLAlchemyError as exc:
            self.lose_leadership()
            raise SourceError(
                f"source {self.name!r}: claim failed: {describe_db_error(exc)}"
            ) from exc

    def acknowledge(self, positions: Sequence[Any]) -> None:
        conn = self._leader()
        try:
            with self._pipelined(conn):
                if positions:
                    table = self._resolve()
                    column = table.c[self._columns["position"]]
                    for start in range(0, len(positions), 5000):
                        chunk = list(positions[start : start + 5000])
                        where = self._positions_filter(column, chunk)
                        if self.settings.on_dispatch == "delete":
                            conn.execute(sa.delete(table).where(where))
                        else:
                            marked = table.c[self._columns["dispatched_at"]]
                            conn.execute(
                                sa.update(table).where(where).values({marked: self._now()})
                            )
                conn.commit()
        except SQLAlchemyError as exc:
            self.lose_leadership()
            raise SourceError(
                f"source {self.name!r}: acknowledging rows failed: {describe_db_error(exc)}"
            ) from exc

    def release(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.rollback()
        except SQLAlchemyError:
            self.lose_leadership()

    def lose_leadership(self) -> None:
        """Drop the leader connection (its session lock and row locks go with it)."""
        conn, self._conn, self._session = self._conn, None, None
        if conn is not None:
            self._on_lose_lead()
            self._discard(conn)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.rollback()
                self._release_leader_lock(self._conn)
                self._conn.commit()
            except SQLAlchemyError:
                pass
        self.lose_leadership()
        self.engine.dispose()

    @staticmethod
    def _discard(conn: sa.Connection) -> None:
        try:
            conn.invalidate()
        except SQLAlchemyError:
            pass
        try:
            conn.close()
        except SQLAlchemyError:
            pass

    # -- status --------------------------------------------------------------------

    def pending(self) -> PendingStats:
        table = self._resolve()
        occurred = self._columns.get("occurred_at")
        unit = self.settings.timestamp_unit
        columns: list[Any] = [sa.func.count()]
        if occurred:
            column = table.c[occurred]
            dated = None if self._epochs else self._a_date(column)
            columns += [self._now(), *oldest_columns(column, self._epochs, unit, dated)]
        query = sa.select(*columns).select_from(table).where(*self._pending_filter(table))
        try:
            with self.engine.connect() as conn:
                row = conn.execute(query).one()
        except SQLAlchemyError as exc:
            raise SourceError(
                f"source {self.name!r} ({self.display_url}): {describe_db_error(exc)}"
            ) from exc
        oldest = oldest_of(row[2:], self._epochs, unit) if occurred else None
        age = None if oldest is None else max(0.0, (as_utc(row[1]) - oldest).total_seconds())
        return PendingStats(int(row[0]), age)

    # -- engine hooks --------------------------------------------------------------

    def _positions_filter(self, column: Any, positions: list[Any]) -> sa.ColumnElement[bool]:
        return column.in_(positions)

    def _now(self) -> sa.ColumnElement[Any]:
        return sa.func.current_timestamp()

    def _a_date(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool] | None:
        """Whether the timestamp ``column`` (of a date, time-stamp or text type) holds a date
        the driver loads and the relay reads, in the engine's own terms; ``None``: every
        value is. Values that are not (PostgreSQL's infinities, MariaDB's zero dates; their
        rows are parked) are left out of the oldest pending age."""
        return None

    @abstractmethod
    def _acquire_leader_lock(self, conn: sa.Connection) -> bool: ...

    def _release_leader_lock(self, conn: sa.Connection) -> None:
        """Release the session lock explicitly (closing the connection also does)."""

    def _on_lead(self, conn: sa.Connection) -> None:
        """Called after leadership is won (PostgreSQL starts listening here)."""

    def _on_lose_lead(self) -> None:
        """Called when leadership is lost."""
