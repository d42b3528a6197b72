"""Applying events to a table projection's tables in a replay's transaction (the shadows of a
blue/green rebuild, or the live tables in place): the handlers run on a
:class:`projections.sql_tx.SqlTx`, and a write the database refuses is the failure of the
one event applied (:class:`HandlerError`), or :class:`Refused` for the caller to apply the
batch's events one by one to find it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import psycopg
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from outbox.db import describe_db_error
from outbox.db_errors import without_values
from outbox.envelope import Envelope
from outbox.errors import StoreError
from projections.api import UnstorableValueError
from projections.replay_base import ReplayerBase
from projections.replay_lock import LockProof
from projections.replay_policy import HandlerError
from projections.replay_skipped import sql_skipped
from projections.shadow import ShadowTables
from projections.sql_store import SqlStore
from projections.sql_tx import NewRows, SqlTx
from projections.sql_writes import RefusedWrite, refused_write

_T = TypeVar("_T")


class Refused(Exception):
    """A batch's writes were refused: apply its events again in smaller batches to find the
    one (its text, like every refusal's, shows no value the database quoted)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(without_values(error)))
        self.error = error


class TableReplayerBase(ReplayerBase):
    """The transactions of a table replay and the applying of events in them (for
    :class:`projections.replay.Replayer`)."""

    store: SqlStore
    shadow: ShadowTables
    _new_rows: NewRows
    _lock: LockProof | None

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A transaction of the replay, committed only if the replay still holds its lock
        (:class:`projections.replay_lock.LockProof`)."""
        try:
            with self.store.writer.begin() as conn:
                yield conn
                if self._lock is not None:
                    self._lock.check(conn)
        except (SQLAlchemyError, psycopg.Error) as exc:
            raise StoreError(
                f"{self.projection.name}: replay failed: {describe_db_error(exc)}"
            ) from exc

    def _reread_skips(self, conn: sa.Connection | None = None) -> None:
        """Read the events an operator skipped again (in ``conn``'s transaction, if given),
        taking in those skipped since the last read (:mod:`projections.replay_skipped`)."""
        if self._skips is None:
            return
        if conn is not None:
            self._skips.add(sql_skipped(conn, self.projection.name))
            return
        with self.store.writer.connect() as read:
            self._skips.add(sql_skipped(read, self.projection.name))

    def _apply(
        self,
        conn: sa.Connection,
        events: Sequence[Envelope],
        tables: dict[sa.Table, sa.Table],
        *,
        lock_rows: bool,
    ) -> int:
        """Apply ``events`` in ``conn``'s transaction; returns how many. Writes the database
        refuses are the failure of the one event applied (:class:`HandlerError`), or
        :class:`Refused` for the caller to apply the events one by one."""
        tx = self._tx(conn, tables, lock_rows=lock_rows)

        def apply() -> int:
            applied = self._handle(tx, events)
            tx.flush()
            return applied

        return self._refusing(events, apply)

    def _refusing(self, events: Sequence[Envelope], work: Callable[[], _T]) -> _T:
        """``work()``, a write the database refused in it raised as the failure of the one
        event of ``events`` (:class:`HandlerError`), or as :class:`Refused`."""
        try:
            return work()
        # UnstorableValueError: a key the projection's prefetch gave that its column refuses.
        except (
            RefusedWrite,
            UnstorableValueError,
            StoreError,
            SQLAlchemyError,
            psycopg.Error,
        ) as exc:
            cause = exc.__cause__ if isinstance(exc, StoreError) else exc
            if cause is None or not refused_write(cause):
                raise
            error = cause.error if isinstance(cause, RefusedWrite) else cause
            if len(events) == 1:
                raise HandlerError(events[0], error) from exc
            raise Refused(error) from exc

    def _tx(
        self, conn: sa.Connection, tables: dict[sa.Table, sa.Table], *, lock_rows: bool
    ) -> SqlTx:
        # Shadow tables start empty and only the rebuild writes them: new rows are COPYed.
        new_rows = self._new_rows if tables is self.shadow.mapping else None
        return SqlTx(
            conn, tables, lock_rows=lock_rows, new_rows=new_rows, projection=self.projection
        )

    def _handle(self, tx: SqlTx, events: Sequence[Envelope]) -> int:
        """Run the handlers of ``events`` (after the projection's prefetch) on ``tx``, but for
        the events the error policy holds; returns how many ran. Nothing is flushed."""
        policy = self._policy
        # Skipping a failed event here, its handler's writes taken back in memory, spares
        # the transaction's rollback and the events before it applied again (a rebuild's
        # transaction is up to 100,000 events). Not in place: the live tables' replay keeps
        # the one way of old.
        undoable = policy.skip_errors and not policy.in_place
        events, ready = policy.ready(events, undoable=undoable)
        self.projection.prefetch(ready, tx)
        handle = self.projection.handle
        applied = 0
        for event in events:
            if undoable and policy.held and policy.holds(event):
                continue
            tx.event = event
            if undoable:
                tx.undoable()
            try:
                handle(event, tx)
            except (SQLAlchemyError, psycopg.Error, RefusedWrite):
                raise
            except Exception as exc:
                failed = HandlerError(event, exc)
                if not (undoable and tx.undo() and _usable(tx.conn)):
                    raise failed from exc
                policy.fail(failed)
                continue
            applied += 1
        tx.settle()
        return applied


def _usable(conn: sa.Connection) -> bool:
    """Whether ``conn``'s transaction goes on: not a PostgreSQL one a failed statement aborted
    (a handler's own query whose error it caught and raised as another)."""
    if conn.dialect.name != "postgresql":
        return True
    status = conn.connection.driver_connection.info.transaction_status  # type: ignore[union-attr]
    return status != psycopg.pq.TransactionStatus.INERROR
