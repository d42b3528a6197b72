"""PostgreSQL outbox source: advisory-lock leader, LISTEN/NOTIFY wake-ups, SKIP LOCKED claims.

A claim skips the pending rows another session has locked (an operator's ``UPDATE``, a
foreign key's check) and holds back the rows it took of their aggregates after them
(:meth:`PostgresOutboxSource._ordered_claim`): those are relayed once the locked row is, in
order; the other aggregates flow meanwhile.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.types.string import TextLoader
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT
from sqlalchemy.exc import SQLAlchemyError

from config import SourceSettings
from config.outbox_identity import outbox_identity
from outbox import source as sql_source
from outbox.db import libpq_conninfo
from outbox.ddl import OutboxTypes, create_table
from outbox.errors import SourceConfigError
from outbox.keepalive import apply_server_keepalives, server_keepalives
from outbox.source import SqlOutboxSource, bounded_connect

NOTIFY_CHANNEL = "readmodel_outbox"
_AGGREGATE_FIELDS = ("aggregate_type", "aggregate_id")
_FIRST = "rm_first_skipped"
_FOUND_IN = sa.text(  # the schema of the table an unqualified name finds (search_path)
    "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.oid = to_regclass(quote_ident(:t))"
)


class PostgresOutboxSource(SqlOutboxSource):
    def __init__(self, name: str, settings: SourceSettings, *, engine: sa.Engine | None = None):
        super().__init__(name, settings, engine=engine)
        self._listener: psycopg.Connection[Any] | None = None
        self._leader_keys: tuple[int, list[int]] = (0, [])  # taken when leading (_lock_keys)
        self._claim_sql: dict[bool, str] = {}
        sa.event.listen(self.engine, "connect", _load_as_text)

    def _lock_keys(self, conn: sa.Connection) -> tuple[int, list[int]]:
        """The leader's exclusive key and the keys of earlier releases, taken shared.

        Per database (the server scopes advisory locks) and outbox table: an unqualified
        table by the schema the search path finds it in (a DSN's ``options`` may set it, as
        :mod:`config.outbox_identity` reads it), so tenants in two schemas both lead. Earlier
        releases took one exclusive key of ``schema`` or ``public`` wherever the table was
        found; held shared here, it keeps a relay of an earlier release and one of this
        release from leading one table together during a rolling upgrade (tenants in two
        schemas share it, and wait for every earlier-release relay of the database)."""
        schema = self.settings.schema_name
        if not schema:
            # No table found: no key. A fallback ("public") would differ from the key of a
            # relay asking once the table is made again in its schema: both would lead it.
            schema = conn.execute(_FOUND_IN, {"t": self.settings.table}).scalar()
            if not schema:
                self._table, self._claim = None, None  # made again: its columns read anew
                self._claim_sql.clear()
                raise SourceConfigError(
                    f"source {self.name!r}: outbox table {self._qualified()!r} does not exist "
                    f"(create it with: readmodel outbox init --source {self.name})"
                )
            named = outbox_identity(self.settings)[-2]  # public: no search path in the DSN
            if named not in ("public", schema):  # another outbox by the registry's reckoning
                raise SourceConfigError(
                    f"source {self.name!r}: outbox table {self.settings.table!r} is found in "
                    f"schema {schema!r}, not in {named!r} that the DSN's search_path names "
                    f"first: another tenant may read it; create schema {named!r} and run "
                    f"readmodel outbox init --source {self.name}"
                )
        table = self.settings.table
        earlier = _key(f"readmodel-relay:{self.settings.schema_name or 'public'}.{table}")
        return _key(f"readmodel-relay-lead:{schema}.{table}"), [earlier]

    def _acquire_leader_lock(self, conn: sa.Connection) -> bool:
        """All keys, or none (a refused connection is discarded, with what it took)."""
        self._leader_keys = self._lock_keys(conn)
        lead, earlier = self._leader_keys
        shared = sa.text("SELECT pg_try_advisory_lock_shared(:key)")
        if not all(conn.execute(shared, {"key": key}).scalar() for key in earlier):
            return False
        return bool(
            conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": lead}).scalar()
        )

    def _release_leader_lock(self, conn: sa.Connection) -> None:
        lead, earlier = self._leader_keys
        conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": lead})
        for key in earlier:
            conn.execute(sa.text("SELECT pg_advisory_unlock_shared(:key)"), {"key": key})

    def _positions_filter(self, column: Any, positions: list[Any]) -> sa.ColumnElement[bool]:
        return column == sa.any_(sa.bindparam("positions", positions, type_=ARRAY(BIGINT)))

    def _now(self) -> sa.ColumnElement[Any]:
        return sa.func.clock_timestamp()

    def _a_date(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool] | None:
        """Years 1 to 9999, what a ``datetime`` holds: not ``'-infinity'``, ``'infinity'``
        nor a BC date or year 10000 on (``isfinite`` would let a BC date through). The
        bounds are untyped literals, read as the column's type in the session's zone."""
        if not self._dates:
            return None
        first, past = sa.literal_column("'0001-01-01'"), sa.literal_column("'10000-01-01'")
        return sa.and_(column >= first, column < past)

    def _fetch_claim(self, conn: sa.Connection, limit: int, lenient: bool) -> Sequence[Any]:
        """The claim query with its BEGIN in one round trip, on the driver's connection."""
        statement = self._claim_sql.get(lenient)
        if statement is None:
            compiled = self._ordered_claim(lenient).compile(dialect=conn.dialect)
            statement = self._claim_sql[lenient] = str(compiled)
        if not conn.in_transaction():
            conn.begin()  # what conn.execute would do; the driver sends BEGIN with the query
        driver = conn.connection.driver_connection
        try:
            with driver.pipeline():  # type: ignore[union-attr]
                cursor = driver.cursor()  # type: ignore[union-attr]
                cursor.execute(statement, {"limit": limit})
                return cursor.fetchall()
        except psycopg.DataError as exc:
            raise sa.exc.DataError(statement, None, exc) from exc
        except psycopg.Error as exc:
            raise sa.exc.OperationalError(statement, None, exc) from exc

    def _ordered_claim(self, lenient: bool) -> sa.Select[Any]:
        """The claim (``FOR UPDATE SKIP LOCKED``) less each row behind a pending row of its
        aggregate that it skipped, locked by another session: relayed, it would reach the log
        before that row (OrderPaid before OrderPlaced). The rows held back stay locked until
        the claim's transaction ends, and pending. One statement: the skipped rows are the
        pending ones before the last row claimed that the claim did not take."""
        table = self._resolve()
        position = self._columns["position"]
        keys = [c for c in (self._columns.get(f) for f in _AGGREGATE_FIELDS) if c]
        claimed = self._claim_query(lenient).cte("claimed")
        row = table.alias("skipped_row")
        last = sa.select(sa.func.max(claimed.c[position])).scalar_subquery()
        skipped = (
            sa.select(*[row.c[k] for k in keys], sa.func.min(row.c[position]).label(_FIRST))
            .where(
                *self._pending_filter(row),
                row.c[position] < last,
                ~sa.exists().where(claimed.c[position] == row.c[position]),
            )
            .group_by(*[row.c[k] for k in keys])
            .cte("skipped")
        )
        behind = sa.exists().where(
            *[skipped.c[k].is_not_distinct_from(claimed.c[k]) for k in keys],
            skipped.c[_FIRST] < claimed.c[position],
        )
        return sa.select(claimed).where(~behind).order_by(claimed.c[position])

    @contextmanager
    def _pipelined(self, conn: sa.Connection) -> Iterator[None]:
        """psycopg's pipeline mode: the acknowledgement and its COMMIT in one round trip."""
        try:
            with conn.connection.driver_connection.pipeline():  # type: ignore[union-attr]
                yield
        except psycopg.Error as exc:  # raised by the pipeline itself, not by a statement
            raise sa.exc.OperationalError("pipeline sync", None, exc) from exc

    # -- wake-ups ------------------------------------------------------------------

    def _on_lead(self, conn: sa.Connection) -> None:
        # The leader's session: a claim or acknowledgement that blocks (a locked table) fails
        # and is retried, instead of holding the relay (and a one-shot drain) for good.
        # And the server drops it (and the advisory lock) soon after this host dies.
        timeout = f"SET statement_timeout = {int(sql_source.CLAIM_TIMEOUT * 1000)}"
        for statement in [timeout, *server_keepalives(self.settings.url)]:
            try:  # the session ends with the leadership: the connection is invalidated then
                conn.exec_driver_sql(statement)
                conn.commit()
            except SQLAlchemyError:
                # A session gone already: try_lead sees it (_same_session), gives the lead
                # up. Or a server before 12 (tcp_user_timeout): the session lock is kept.
                try:
                    conn.rollback()
                except SQLAlchemyError:
                    return
        if self.settings.notify:
            self._listen()

    def _listen(self) -> None:
        try:
            listener = psycopg.connect(
                libpq_conninfo(self.settings.url),
                autocommit=True,
                **bounded_connect(self.settings.url),
            )
            apply_server_keepalives(self.settings.url, partial(_try_set, listener))
            listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self._listener = listener
        except psycopg.Error:
            self._listener = None

    def _on_lose_lead(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.close()
            except psycopg.Error:
                pass

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Wait for a NOTIFY (or the timeout); without a listener, plain polling.

        A listener lost (its connection ended) returns at once: the NOTIFYs sent meanwhile
        are gone, so the relay claims, and its next wait listens again, on a new connection,
        from the start of that wait (it slept through the wait after a lost listener, and
        through the next one too, NOTIFYs unheard)."""
        listener = self._listener
        if listener is None and self.settings.notify and self.leading:
            self._listen()
            listener = self._listener
        if listener is None:
            stop.wait(timeout)
            return
        remaining = timeout
        while remaining > 0 and not stop.is_set():
            step = min(remaining, 0.25)
            try:
                if _notified(listener, step, stop_after=1):
                    _notified(listener, 0)  # one wake-up covers every NOTIFY already queued
                    return
            except psycopg.Error:
                self._on_lose_lead()
                return
            remaining -= step

    # -- housekeeping --------------------------------------------------------------

    def purge_dispatched(self) -> int:
        if self.settings.on_dispatch != "mark":
            return 0
        table = self._resolve()
        position = table.c[self._columns["position"]]
        marked = table.c[self._columns["dispatched_at"]]
        cutoff = sa.func.now() - sa.func.make_interval(
            0, 0, 0, 0, 0, 0, self.settings.retention.total_seconds()
        )
        doomed = sa.select(position).where(marked < cutoff).limit(10_000).scalar_subquery()
        total = 0
        try:
            while True:
                with self.engine.begin() as conn:
                    count = conn.execute(sa.delete(table).where(position.in_(doomed))).rowcount
                total += count
                if count < 10_000:
                    return total
        except SQLAlchemyError:
            return total

    def ddl(self) -> list[str]:
        return postgres_ddl(self.settings)


def _notified(
    listener: psycopg.Connection[Any], timeout: float, stop_after: int | None = None
) -> bool:
    """Whether NOTIFYs arrived within ``timeout`` (0: only those already queued), consuming them.

    The rows behind a NOTIFY were committed before it was sent, so a claim that starts
    after this returns sees them all: dropping the extra wake-ups loses nothing.
    """
    woken = False
    for _ in listener.notifies(timeout=timeout, stop_after=stop_after):
        woken = True
    return woken


def _try_set(listener: psycopg.Connection[Any], statement: str) -> None:
    """A ``SET`` on an autocommit connection; one the server refuses is left out."""
    try:
        listener.execute(statement)  # type: ignore[arg-type]
    except psycopg.errors.UndefinedObject:
        pass  # tcp_user_timeout before PostgreSQL 12


def _load_as_text(dbapi_connection: Any, _record: Any) -> None:
    """Let json/jsonb arrive as text: the relay validates and forwards it without re-encoding.

    uuid too: PostgreSQL's text form is ``str(uuid.UUID(...))``, so event ids come out the
    same without building a ``UUID`` per row only to turn it back into text.
    """
    for type_name in ("json", "jsonb", "uuid"):
        dbapi_connection.adapters.register_loader(type_name, TextLoader)


_TYPES = OutboxTypes(
    quote='"',
    position="BIGSERIAL PRIMARY KEY",
    event_id="UUID NOT NULL DEFAULT gen_random_uuid() UNIQUE",
    text="VARCHAR(255) NOT NULL",
    payload="JSONB NOT NULL",
    occurred_at="TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()",
    optional_text="VARCHAR(255)",
    headers="JSONB",
    dispatched_at="TIMESTAMPTZ",
)


def postgres_ddl(settings: SourceSettings) -> list[str]:
    c, q = settings.columns, _TYPES.q
    table = _TYPES.table(settings)
    base = settings.table
    statements = [create_table(settings, _TYPES, [], "")]
    if c.dispatched_at:
        statements.append(
            f"CREATE INDEX IF NOT EXISTS {q(base + '_pending_idx')} ON {table} ({q(c.position)}) "
            f"WHERE {q(c.dispatched_at)} IS NULL"
        )
        statements.append(
            f"CREATE INDEX IF NOT EXISTS {q(base + '_dispatched_idx')} ON {table} "
            f"({q(c.dispatched_at)}) WHERE {q(c.dispatched_at)} IS NOT NULL"
        )
    statements += [
        "CREATE OR REPLACE FUNCTION readmodel_outbox_notify() RETURNS trigger\n"
        "LANGUAGE plpgsql AS $$\nBEGIN\n"
        f"    PERFORM pg_notify('{NOTIFY_CHANNEL}', TG_TABLE_NAME);\n"
        "    RETURN NULL;\nEND\n$$",
        f"DROP TRIGGER IF EXISTS {q(base + '_readmodel_notify')} ON {table}",
        f"CREATE TRIGGER {q(base + '_readmodel_notify')} AFTER INSERT ON {table}\n"
        "    FOR EACH STATEMENT EXECUTE FUNCTION readmodel_outbox_notify()",
    ]
    return statements


def _key(identity: str) -> int:
    """A signed 64-bit advisory-lock key."""
    return int.from_bytes(
        hashlib.blake2b(identity.encode(), digest_size=8).digest(), "big", signed=True
    )
