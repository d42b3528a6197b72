"""The handler's view of a SQL store transaction: reads see earlier writes of the same batch;
writes are folded per key and flushed as a few batched statements at commit."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import date, time, timedelta, tzinfo
from decimal import Decimal
from typing import Any, NoReturn
from uuid import UUID

import sqlalchemy as sa

from outbox.envelope import Envelope
from projections.api import Projection, UnstorableValueError
from projections.row_locks import OutOfOrder, RowLocks
from projections.sql_plans import TablePlan, driver_cursor
from projections.sql_prefetch import Prefetches, row_lock_key
from projections.sql_tenants import mine, placed, reading_tenant, taken
from projections.sql_values import Converters, key_forms, stored_values
from projections.sql_writes import (
    DELETE,
    REPLACE,
    UNREAD,
    UPSERT,
    Entry,
    Key,
    NewRows,
    PendingWrites,
    as_compared,
    refusals,
)
from projections.store import new_cache_tags

__all__ = ["NewRows", "PendingWrites", "SqlTx", "row_lock_key"]


class SqlTx(Prefetches):
    """Implements :class:`projections.api.Tx` over one open SQLAlchemy connection.

    ``tables`` maps each of the projection's tables to the physical table it
    writes (the same one normally; a shadow copy during a rebuild).

    Given the ``projection`` and one with a ``tenant_column``, every row upserted into one
    of its tenant tables (not ``shared_tables``) belongs to the tenant of :attr:`event`, the
    event being handled (set by the store before each handler): the column is filled in
    when the row lacks it; a row naming another tenant, or an event without a tenant,
    raises :class:`TenantError` (the handler's failure). Its ``get``, ``find`` and ``delete``
    of a tenant table are of that tenant's rows, and an upsert never overwrites another
    tenant's row of its key (:mod:`projections.sql_tenants`).

    On PostgreSQL every row read first takes a transaction-scoped advisory lock on
    its key, so two lanes that read-modify-write the same
    row (a per-customer total fed by per-order lanes) serialize instead of
    losing an update, even when the row does not exist yet. SQLite transactions
    are serialized already. ``locks`` (:class:`projections.row_locks.RowLocks`) takes them:
    an ordered one (a live batch's, a parked retry's, an in-place replay batch's) in one
    order whatever order the handlers read in.
    """

    def __init__(
        self,
        conn: sa.Connection,
        tables: Mapping[sa.Table, sa.Table],
        *,
        lock_rows: bool = True,
        new_rows: NewRows | None = None,
        batch_prefetch: bool = False,
        projection: Projection | None = None,
        locks: RowLocks | None = None,
    ) -> None:
        self.conn = conn
        self.event: Envelope | None = None
        """The event whose handler is running: its tenant is the one rows are written for."""
        tenanted = projection is not None and projection.tenant_column is not None
        self._tenant_projection = projection if tenanted else None
        self._new_rows = new_rows if conn.dialect.name == "postgresql" else None
        self._postgresql = conn.dialect.name == "postgresql"
        # A rebuild writes shadow tables no other transaction touches: no row locks needed.
        self._lock_rows = lock_rows and self._postgresql
        self._locks = RowLocks() if locks is None else locks
        self._tables = tables
        self._pk_names: dict[sa.Table, tuple[str, ...]] = {}
        self._info: dict[sa.Table, _Info] = {}
        self._widths: dict[str, int] = {}  # physical table name -> its number of columns
        self._pending: dict[Key, Entry] = {}
        self._read: dict[Key, dict[str, Any] | None] = {}
        self._order: list[sa.Table] = []
        self.invalidated: set[str] = set()
        # PostgreSQL: prefetches wait for the first read, then go out in one round trip.
        self._batch_prefetch = batch_prefetch and self._postgresql
        self._deferred: list[tuple[TablePlan, list[tuple[Any, ...]]]] = []
        self._undo: _Undo | None = None

    @property
    def tables(self) -> Iterable[sa.Table]:
        """The projection's tables (logical: as its handlers name them)."""
        return self._tables.keys()

    def _describe(self, table: sa.Table) -> _Info:
        """``(physical table, its name, primary key column names, the converters of its
        values to what the database stores, its tenant column or None, the key column names
        when equal keys may differ in form (:func:`key_forms`) or None)``, looked up once."""
        info = self._info.get(table)
        if info is None:
            physical = self._physical(table)
            converters = stored_values(self.conn.dialect, table, self.session_zone())
            self._widths[physical.name] = len(physical.columns)
            info = self._info[table] = (
                physical,
                physical.name,
                self._pk(table),
                converters,
                self._tenant_column(table),
                key_forms(self.conn.dialect, table),
            )
        return info

    def session_zone(self) -> tzinfo | None:
        """The session's time zone (PostgreSQL's ``TimeZone``), which timestamps take."""
        if not self._postgresql:
            return None
        return self.conn.connection.driver_connection.info.timezone  # type: ignore[union-attr]

    def _tenant_column(self, table: sa.Table) -> str | None:
        projection = self._tenant_projection
        if projection is None or any(table is shared for shared in projection.shared_tables):
            return None
        column = projection.tenant_column
        return column if column in table.c else None

    @property
    def _tenant_name(self) -> str:
        return "" if self._tenant_projection is None else self._tenant_projection.name

    def _physical(self, table: sa.Table) -> sa.Table:
        try:
            return self._tables[table]
        except KeyError:
            raise KeyError(f"table {table.name!r} is not among this projection's tables") from None

    def _pk(self, table: sa.Table) -> tuple[str, ...]:
        names = self._pk_names.get(table)
        if names is None:
            names = self._pk_names[table] = tuple(c.name for c in table.primary_key.columns)
        return names

    def _key(self, table: sa.Table, key: Any) -> tuple[Any, ...]:
        key = key if isinstance(key, tuple) else (key,)
        if len(key) != len(self._pk(table)):
            raise ValueError(
                f"{table.name}: key {key!r} does not match primary key {list(self._pk(table))}"
            )
        try:
            hash(key)
        except TypeError:
            self._unhashable(table, key)
        return key

    def _unhashable(self, table: sa.Table, key: Any) -> NoReturn:
        """Refuse ``key``, which holds a list or a dict: a key is a value per key column (a
        tuple of them for several)."""
        raise ValueError(
            f"{table.name}: key {key!r} does not match primary key {list(self._pk(table))}: "
            "give a value per key column (a tuple of them for several), not a list or dict"
        )

    def _row_key(self, table: sa.Table, row: Mapping[str, Any]) -> tuple[Any, ...]:
        try:
            return tuple([row[name] for name in self._pk(table)])
        except KeyError as exc:
            raise ValueError(f"{table.name}: row lacks primary key column {exc}") from None

    def get(self, table: sa.Table, key: Any) -> dict[str, Any] | None:
        column = None
        if self._tenant_projection is not None:
            column = (self._info.get(table) or self._describe(table))[4]
        if column is not None:  # a tenant table: another tenant's row is not found
            tenant = reading_tenant(self._tenant_name, self.event, table, column, "read")
            found = self._get(table, key)
            if not mine(found, column, tenant):
                return None
        else:
            found = self._get(table, key)
        if self._undo is not None and found is not None:
            # Its values are the pending write's or the read row's: a handler that changes one
            # in place (a JSON list) and fails would leave the change past :meth:`undo`.
            for column, value in found.items():
                if value is not None and not isinstance(value, _IMMUTABLE):
                    found[column] = deepcopy(value)
        return found

    def _get(self, table: sa.Table, key: Any) -> dict[str, Any] | None:
        if self._deferred:
            self._run_deferred()
        physical, name, pk, converters, _, forms = self._info.get(table) or self._describe(table)
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) != len(pk):
            self._key(table, key)  # raises the error naming the table and its key
        if converters.keys is not None:
            key = converters.key(key, lookup=True)
            if key is None:
                return None  # an integer its column cannot hold: no row has it
        k = (name, key)
        try:
            pending = self._pending.get(k)
        except TypeError:
            self._unhashable(table, key)
        if pending is None:
            row = self._read.get(k, UNREAD)
            if row is UNREAD:
                return self._load(physical, k)
            return None if row is None else row.copy()
        op, row = pending
        if op == DELETE:
            return None
        if op == REPLACE:
            found = dict(row or {})
        else:
            base = self._read.get(k, UNREAD)
            if base is UNREAD:
                base = self._load(physical, k)
            found = {**(base or {}), **(row or {})}
            if forms is not None and base:  # the key as stored (the upsert keeps it)
                for column in forms:
                    found[column] = base[column]
        if len(found) < self._widths[name]:
            # A row this batch created from some of its columns: the table gives the others
            # (defaults, NULLs), as it would had the batch ended before this read.
            self.flush()
            return self._load(physical, k)
        return found

    def _load(self, physical: sa.Table, k: Key) -> dict[str, Any] | None:
        row = self._read.get(k, UNREAD)
        if row is not UNREAD:
            return None if row is None else row.copy()
        columns = physical.primary_key.columns
        where = [self._equal(c, v) for c, v in zip(columns, k[1], strict=True)]
        with refusals():  # a key the column cannot take: refused for what was looked up
            if self._lock_rows:
                # A separate statement: READ COMMITTED takes the next statement's snapshot
                # after the lock is granted, so the read below sees what the holder committed.
                self._locks.take(self._cursor, (row_lock_key(k),))
            found = self.conn.execute(sa.select(physical).where(*where)).first()
        row = None if found is None else dict(found._mapping)
        self._read[k] = row
        return None if row is None else dict(row)

    def _cursor(self) -> Any:
        return driver_cursor(self.conn)

    def upsert(self, table: sa.Table, row: Mapping[str, Any]) -> None:
        """Fold ``row`` into the batch's writes. Its values are kept as the database will
        store them (``projections/sql_values.py``): a later ``get`` in this batch sees what
        a ``get`` in a later batch would, wherever the batch boundaries fall."""
        physical, name, pk, converters, tenant, forms = self._info.get(table) or self._describe(
            table
        )
        if tenant is not None:
            row = placed(self._tenant_name, self.event, table, tenant, row)
        try:
            key = (row[pk[0]],) if len(pk) == 1 else tuple([row[c] for c in pk])
        except KeyError as exc:
            raise ValueError(f"{table.name}: row lacks primary key column {exc}") from None
        if None in key:
            _null_key(table, pk, key)
        if tenant is not None and tenant not in pk:  # the key may be another tenant's row
            found = self._get(table, key)
            if not mine(found, tenant, row[tenant]):
                raise taken(self._tenant_name, self.event, table, tenant, found)
        k = (name, key if converters.keys is None else converters.key(key))
        pending = self._pending.get(k)
        if pending is None:
            op, values = UPSERT, dict(row)
        elif pending[0] == DELETE:
            op, values = REPLACE, dict(row)
        else:
            op, first = pending
            if forms is not None:  # an equal key keeps the form first written, as stored
                row = {**row, **{column: first[column] for column in forms}}  # type: ignore[index]
            values = {**(first or {}), **row}
        if converters.columns:
            # On a copy: a value it refuses (WideIntegerError) leaves the batch's writes as
            # they were, so a handler that catches it may write another row.
            converters.normalize(values, row)
        if self._undo is not None:
            self._undo.replaced.setdefault(k, pending)
        self._pending[k] = (op, values)
        if physical not in self._order:
            self._order.append(physical)

    def delete(self, table: sa.Table, key: Any) -> None:
        physical, name, _, converters, column, _ = self._info.get(table) or self._describe(table)
        key = self._key(table, key)
        if column is not None:  # a tenant table: another tenant's row stays
            tenant = reading_tenant(self._tenant_name, self.event, table, column, "delete")
            if not mine(self._get(table, key), column, tenant):
                return
        self._remember(physical)
        if converters.keys is not None:
            key = converters.key(key, lookup=True)
            if key is None:
                return  # an integer its column cannot hold: no row to delete
        if self._undo is not None:
            self._undo.replaced.setdefault((name, key), self._pending.get((name, key)))
        self._pending[(name, key)] = (DELETE, None)

    def find(self, table: sa.Table, **equals: Any) -> list[dict[str, Any]]:
        """Rows whose columns equal ``equals`` (pending writes are flushed first); of a tenant
        table, the event's tenant's rows only."""
        physical = self._physical(table)
        info = self._info.get(table) or self._describe(table)
        column = info[4]
        tenant = None
        if column is not None:
            tenant = reading_tenant(self._tenant_name, self.event, table, column, "find")
        if self._deferred:
            self._run_deferred()
        self.flush()
        # Each value as its column stores it, as ``get`` looks up a key: PostgreSQL refuses
        # to compare an integer column with text (aborting the transaction); a numpy scalar
        # as the plain value psycopg sends (sqlite3 binds a numpy integer as a BLOB).
        converted = info[3].lookup(equals)
        if converted is None:
            return []  # a value its column cannot hold (an integer past its range): no row
        equals = converted
        where = [self._equal(physical.c[name], v) for name, v in equals.items()]
        if tenant is not None:  # beside a filter of the column itself: rows where both agree
            where.append(self._equal(physical.c[column], tenant))
        query = sa.select(physical).where(*where)
        with refusals():  # a value the column cannot take: refused for what was looked up
            return [dict(row._mapping) for row in self.conn.execute(query)]

    def _equal(self, column: sa.Column[Any], value: Any) -> sa.ColumnElement[bool]:
        """``column == value``, the value as :func:`as_compared` sends it (``IS NULL`` for
        ``None``)."""
        return column == (value if value is None else as_compared(self.conn, column, value))

    def invalidate(self, *tags: str) -> None:
        added = new_cache_tags(self.invalidated, tags)
        if self._undo is not None:
            self._undo.tags.extend(added)
        self.invalidated.update(added)

    def undoable(self) -> None:
        """Keep from here what the writes replace, so that :meth:`undo` can take them back:
        a rebuild skipping a failed handler's event drops that handler's writes in memory
        instead of rolling its transaction back and applying the events before it again."""
        self._undo = _Undo(len(self._order))

    def settle(self) -> None:
        """Stop keeping what writes replace: the writes since :meth:`undoable` stay."""
        self._undo = None

    def undo(self) -> bool:
        """Take back every write since :meth:`undoable`; ``False`` (nothing taken back) when
        there is none to take back from or a flush has sent some of them already."""
        undo, self._undo = self._undo, None
        if undo is None or undo.sent:
            return False
        for k, entry in undo.replaced.items():
            if entry is None:
                self._pending.pop(k, None)
            else:
                self._pending[k] = entry
        del self._order[undo.order :]
        self.invalidated.difference_update(undo.tags)
        return True

    def _remember(self, physical: sa.Table) -> None:
        if physical not in self._order:
            self._order.append(physical)

    @property
    def restart(self) -> OutOfOrder | None:
        """The :class:`~projections.row_locks.OutOfOrder` a row lock raised in this Tx, if
        any: its batch starts again, whatever the handler made of the exception."""
        return self._locks.restart

    def flush(self) -> None:
        """Write every pending change: deletes, then upserts grouped by column set."""
        if self._locks.restart is not None:  # a handler caught it: the batch must not commit
            raise self._locks.restart
        if self._deferred:
            self._run_deferred()  # their row locks are part of the batch's isolation
        if self._undo is not None and self._undo.replaced:
            self._undo.sent = True  # writes since undoable() go out: no taking them back
        if self._pending:
            with refusals():
                PendingWrites(self._pending, self._order, self._read, self._new_rows).write(
                    self.conn
                )
        self._read.clear()
        self._pending.clear()


# (physical table, its name, primary key column names, value converters, tenant column,
# key column names kept in their first form or None)
_Info = tuple[sa.Table, str, tuple[str, ...], Converters, str | None, tuple[str, ...] | None]
# Values a handler cannot change in place (others, a JSON column's lists and dicts, are copied).
_IMMUTABLE = (str, int, float, Decimal, bytes, date, time, timedelta, UUID, frozenset)


@dataclass(slots=True)
class _Undo:
    """What :meth:`SqlTx.undo` restores: each key's entry before the first write since
    :meth:`SqlTx.undoable` (``None``: it had none), the tables first written before it, the
    cache tags added since; taken back only while no flush has sent a write made since
    (one before them, a ``find`` sending earlier events' writes, leaves them undoable)."""

    order: int
    sent: bool = False
    replaced: dict[Key, Entry | None] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)


def _null_key(table: sa.Table, pk: tuple[str, ...], key: tuple[Any, ...]) -> NoReturn:
    column = pk[key.index(None)]
    raise UnstorableValueError(
        f"{table.name}.{column} cannot hold None: a primary key column holds no NULL (SQLite "
        "would number the row itself, PostgreSQL refuse it)"
    )
