"""Read models in PostgreSQL (SQLAlchemy Core, batched upserts) or SQLite (the embedded default)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import psycopg
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from outbox.commits import begin_telling_commit
from outbox.db import create_engine, describe_db_error, engine_kind, engine_location
from outbox.db_errors import hidden_traceback, without_values
from outbox.envelope import Envelope
from outbox.errors import StoreError, read_store_at
from outbox.schema import create_tables
from outbox.sqlite_whole_numbers import exact_whole_numbers
from projections.api import Projection, UnstorableValueError
from projections.handler_timeout import HandlerTimeout, bounded
from projections.numeric_scale import with_scaled_spellings
from projections.row_locks import OutOfOrder, RowLocks, apply_in_order
from projections.session_zone_tags import with_session_spellings
from projections.sql_checkpoints import SqlCheckpoints, _driver
from projections.sql_invalidations import SqlInvalidations
from projections.sql_parked_bulk import SqlBulkParking
from projections.sql_parked_entries import SqlParkedEntries, parked_of, still_parked
from projections.sql_parking import ParkedEntry, SqlParking, held_entry
from projections.sql_tx import SqlTx
from projections.sql_writes import (
    RefusedWrite,
    refusals,
    refused_for_good,
    refused_write,
)
from projections.store import (
    AggregateKey,
    BatchResult,
    EventLoader,
    HandlerFailed,
    Invalidation,
    Lane,
    Store,
    WritesRefused,
    add_cache_tags,
    hold_of,
    tenant_holds_of,
    unheld,
    untenant_entries,
)
from projections.store_tables import parked_events


class SqlStore(
    SqlCheckpoints, SqlParking, SqlParkedEntries, SqlBulkParking, SqlInvalidations, Store
):
    """A store in one PostgreSQL or SQLite database."""

    def __init__(
        self, url: str, *, engine: sa.Engine | None = None, label: str | None = None
    ) -> None:
        self.kind = engine_kind(url)
        self.label = label
        """The store's name in messages (:meth:`config.Settings.store_label`)."""
        if self.kind not in ("postgresql", "sqlite"):
            raise StoreError("a SQL read-model store is PostgreSQL or SQLite")
        self.engine = engine or create_engine(url)
        if self.kind == "sqlite":  # an engine given: NUMERIC whole numbers kept exactly too
            exact_whole_numbers(self.engine)
        # Transactions that write: on SQLite they take the write lock at BEGIN, so two
        # writers wait for each other instead of failing to upgrade a read lock.
        self.writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")

    @property
    def location(self) -> str:
        """Where the store is, as its lines name it: no user, password or query."""
        return engine_location(self.engine)

    def insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT (it has ``on_conflict_do_*``)."""
        if self.kind == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    def create_tables(self, projections: Sequence[Projection]) -> None:
        for projection in projections:
            if projection.collections:
                raise StoreError(
                    f"projection {projection.name!r} keeps collections: its store "
                    f"{projection.store!r} must be a MongoDB store ([stores.NAME] url = "
                    f'"mongodb://..."), not {self.kind}'
                )
        tables = [table for projection in projections for table in projection.tables]
        try:
            create_tables(self.engine, tables)
        except SQLAlchemyError as exc:
            where = read_store_at(self.location, self.label)
            raise StoreError(
                f"cannot create tables in the {where}: {describe_db_error(exc)}"
            ) from exc

    def close(self) -> None:
        self.engine.dispose()

    def stuck_journal(self) -> Path | None:
        """Beside a SQLite database file: the stuck batch holds its one write lock."""
        database = self.engine.url.database
        if self.kind != "sqlite" or not database or database == ":memory:":
            return None
        if database.startswith("file:"):
            return None  # a URI filename: not a plain path to put a file beside
        path = Path(database)
        return path.with_name(path.name + ".stuck-attempts")

    def refused_for_good(self, error: BaseException) -> bool:
        return refused_for_good(error)

    def tables_for(self, projection: Projection) -> dict[sa.Table, sa.Table]:
        """Logical table -> physical table (a rebuild maps them to shadow copies)."""
        return {table: table for table in projection.tables}

    # -- applying ------------------------------------------------------------------

    def apply_batch(
        self,
        projection: Projection,
        lane: Lane,
        target: int | None,
        load: EventLoader,
        limit: int,
    ) -> BatchResult:
        if target is None and not self.reads_log_head:
            raise StoreError("apply_batch needs a target: this store does not hold the log")
        return apply_in_order(
            lane, lambda locks: self._apply_batch(projection, lane, target, load, limit, locks)
        )

    def _apply_batch(
        self,
        projection: Projection,
        lane: Lane,
        target: int | None,
        load: EventLoader,
        limit: int,
        locks: RowLocks,
    ) -> BatchResult:
        try:
            with self.writer.begin() as conn:
                position, any_blocked, head = self._open_lane(conn, lane, with_head=target is None)
                if target is None:
                    target = head
                if position >= target:
                    return BatchResult(0, 0, position, noop=True, target=target)
                events = load(position, target, limit)
                upto = events[-1].position if len(events) >= limit else target
                held = self.blocked_aggregates(conn, lane) if any_blocked else {}
                tenanted = any(key.tenant for key in held)
                tx = SqlTx(
                    conn,
                    self.tables_for(projection),
                    batch_prefetch=True,
                    projection=projection,
                    locks=locks,
                )
                if events:  # of the events to handle: a held one's key may be refused
                    try:
                        projection.prefetch(unheld(held, events), tx)
                    except (RefusedWrite, UnstorableValueError) as exc:  # a key of an event's
                        raise _refusal(events, exc) from exc
                applied = 0
                parked: list[ParkedEntry] = []
                tags = tx.invalidated if self.journal_invalidations else None
                try:
                    for event in events:
                        hold = hold_of(held, event) if held else None
                        if hold is None and tenanted and (tenants := tenant_holds_of(held, event)):
                            hold = self.merge_holds(conn, lane, held, tenants)
                            parked = untenant_entries(parked, hold[0])
                        if hold is not None:
                            parked.append(held_entry(lane, event, hold[1]))
                            continue
                        _handle(projection, event, tx, tags)
                        applied += 1
                    if parked:
                        self.park_many(conn, lane.projection, parked)
                    upto = int(upto or target)
                    invalidation = self._finish(conn, tx, lane, upto, projection.name, tags)
                except Exception as exc:
                    if not refused_write(exc) or not events:
                        raise
                    raise _refusal(events, exc) from exc
                return BatchResult(
                    applied, len(parked), upto, invalidation=invalidation, target=target
                )
        except (HandlerFailed, WritesRefused):
            raise
        except (SQLAlchemyError, psycopg.Error) as exc:  # psycopg: SqlTx's driver-level paths
            raise StoreError(f"{lane.projection}: apply failed: {describe_db_error(exc)}") from exc

    def _stored_spellings(self, tx: SqlTx, tags: set[str] | None) -> set[str] | None:
        """``tags`` and the tags of their ids as this store keeps them in the projection's
        keys: a timestamp in the session's zone, a number at a NUMERIC key's scale."""
        tags = with_session_spellings(tags, tx.session_zone())
        return with_scaled_spellings(tags, tx.tables, self.kind == "sqlite")

    def _finish(
        self,
        conn: sa.Connection,
        tx: SqlTx,
        lane: Lane,
        upto: int,
        projection: str,
        tags: set[str] | None,
    ) -> Invalidation | None:
        """Write the batch, move the checkpoint, journal the invalidation, commit.

        On PostgreSQL all of it is sent at once and answered in one round trip (psycopg's
        pipeline mode; the first error aborts the rest and is raised at the commit)."""
        tags = self._stored_spellings(tx, tags)
        if self.kind != "postgresql":
            tx.flush()
            self.set_checkpoint(conn, lane, upto)
            return self.journal(conn, projection, tags)
        driver = _driver(conn)
        with refusals(), driver.pipeline():  # the flush's refusals surface at the commit
            tx.flush()
            self.set_checkpoint(conn, lane, upto)
            journal = None
            if tags:
                ordered = tuple(sorted(tags))
                journal = driver.cursor()
                journal.execute(_JOURNAL, (projection, orjson.dumps(ordered).decode()))
            driver.commit()
        if journal is None:
            return None
        row = journal.fetchone()
        return Invalidation(int(row[0]), projection, ordered)  # type: ignore[index]

    def retry_parked(
        self,
        projection: Projection,
        lane: Lane,
        aggregate: AggregateKey,
        load: Callable[[list[int]], Sequence[Envelope]],
        entry_id: int | None = None,
    ) -> int:
        where = parked_of(lane, aggregate)

        def attempt(locks: RowLocks) -> int:
            return self._retry_parked(projection, lane, aggregate, load, where, locks, entry_id)

        try:  # row locks in order, as a live batch's (projections/row_locks.py)
            return apply_in_order(lane, attempt)
        except HandlerFailed as failed:
            self.record_failed_retry(lane, aggregate, failed)
            raise

    def _retry_parked(
        self,
        projection: Projection,
        lane: Lane,
        aggregate: AggregateKey,
        load: Callable[[list[int]], Sequence[Envelope]],
        aggregate_where: tuple[Any, ...],
        locks: RowLocks,
        entry_id: int | None,
    ) -> int:
        what = f"{lane.projection}: retry of {aggregate.aggregate_type}:{aggregate.aggregate_id}"
        try:  # a deadlock is retried, as in a batch
            with begin_telling_commit(self.writer, what) as conn:
                self.lock_lane(conn, lane)
                if entry_id is not None:  # the lane, then the entry: as a replay's swap
                    still_parked(conn, entry_id)
                positions = [
                    int(p)
                    for p in conn.execute(
                        sa.select(parked_events.c.position)
                        .where(*aggregate_where, parked_events.c.status == "parked")
                        .order_by(parked_events.c.position)
                    ).scalars()
                ]
                tx = SqlTx(conn, self.tables_for(projection), projection=projection, locks=locks)
                events = list(load(positions)) if positions else []
                tags = tx.invalidated if self.journal_invalidations else None
                for event in events:
                    try:  # written event by event: a refused write is the event's own failure
                        _handle(projection, event, tx, tags)
                        tx.flush()
                    except RefusedWrite as refused:
                        error, detail = without_values(refused.error), hidden_traceback(refused)
                        raise HandlerFailed(event, error, detail, refused=True) from refused
                tags = self._stored_spellings(tx, tags)
                self.journal(conn, projection.name, tags)  # done by the engine after the retry
                conn.execute(
                    parked_events.update()
                    .where(*aggregate_where, parked_events.c.status == "parked")
                    .values(status="retried", resolved_at=sa.func.current_timestamp())
                )
                self._release(conn, lane, aggregate, positions)
                return len(events)
        except (SQLAlchemyError, psycopg.Error) as exc:
            raise StoreError(f"{lane.projection}: retry failed: {describe_db_error(exc)}") from exc


_JOURNAL = "INSERT INTO rm_invalidations (projection, tags) VALUES (%s, %s) RETURNING id"


def _refusal(events: Sequence[Envelope], exc: Exception) -> HandlerFailed | WritesRefused:
    """What the batch of ``events`` raises for ``exc``, a write or lookup it refused: the
    event's failure when it holds one (``refused``: by the Tx, :class:`RefusedWrite` around
    its own statements or :class:`UnstorableValueError` naming the column, not a prefetch's
    own query), else :class:`WritesRefused` to apply them one by one."""
    refused = isinstance(exc, RefusedWrite | UnstorableValueError)
    # Without the values the database quotes: logged and parked.
    error = without_values(exc.error if isinstance(exc, RefusedWrite) else exc)
    if len(events) == 1:
        return HandlerFailed(events[0], error, hidden_traceback(exc), refused=refused)
    return WritesRefused(events[-1].position or 0, error)


def _handle(
    projection: Projection, event: Envelope, tx: SqlTx, tags: set[str] | None = None
) -> None:
    """Run ``projection``'s handler of ``event`` in ``tx``. What the Tx's statements refused
    (:class:`RefusedWrite`) goes on, for the store to find the event to blame; so does a
    database error that is no refusal (a lost connection, a lock timeout: retried as the
    store's). Anything else is the handler's own failure, :class:`HandlerFailed`: a data
    exception of its own query too, retried up to ``max_attempts``; ``refused`` only for a
    value the Tx refused naming its column (:class:`UnstorableValueError`,
    :class:`WideIntegerError` among them)."""
    tx.event = event
    try:
        with bounded(projection.name, event, _cancel, tx.conn):
            if projection.handle(event, tx) and tags is not None:
                add_cache_tags(projection, event, tags)
    except HandlerTimeout as exc:  # past engine.handler_timeout: the event's own failure
        raise HandlerFailed(event, exc, hidden_traceback(exc)) from exc
    except (RefusedWrite, OutOfOrder):  # the store's: to find the event, or to start again
        raise
    except (SQLAlchemyError, psycopg.Error) as exc:
        if tx.restart is not None:  # an OutOfOrder the handler wrapped: start again
            raise tx.restart from exc
        if refused_write(exc):  # the handler's own query: the Tx raises RefusedWrite
            raise HandlerFailed(event, without_values(exc), hidden_traceback(exc)) from exc
        raise
    except Exception as exc:
        if tx.restart is not None:
            raise tx.restart from exc
        refused = isinstance(exc, UnstorableValueError)
        raise HandlerFailed(event, exc, hidden_traceback(exc), refused=refused) from exc


def _cancel(conn: sa.Connection) -> None:
    """Cancel the statement ``conn`` is waiting on, from another thread (PostgreSQL's;
    SQLite's waits are bounded by its busy timeout)."""
    if conn.dialect.name == "postgresql":
        _driver(conn).cancel_safe(timeout=5.0)
