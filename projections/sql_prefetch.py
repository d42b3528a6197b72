"""Prefetching for :class:`projections.sql_tx.SqlTx`: many rows read in one query (on
PostgreSQL, deferred until the first read and sent in one round trip with the row locks),
filed under the keys asked for, so later ``tx.get`` calls need no round trip."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from projections.row_locks import RowLocks
from projections.sql_key_equality import as_keyed
from projections.sql_number_values import pg_single_precision
from projections.sql_plans import TablePlan, driver_cursor, table_plan
from projections.sql_values import key_equality
from projections.sql_writes import Key, refusals

__all__ = ["Prefetches", "row_lock_key"]


class Prefetches:
    """:meth:`prefetch` and the deferred reads of a :class:`~projections.sql_tx.SqlTx`, which
    holds the state and the lookups these use."""

    conn: sa.Connection
    _info: dict[sa.Table, Any]
    _read: dict[Key, dict[str, Any] | None]
    _deferred: list[tuple[TablePlan, list[tuple[Any, ...]]]]
    _batch_prefetch: bool
    _postgresql: bool
    _lock_rows: bool
    _locks: RowLocks

    if TYPE_CHECKING:

        def _describe(self, table: sa.Table) -> Any: ...
        def _key(self, table: sa.Table, key: Any) -> tuple[Any, ...]: ...
        def _unhashable(self, table: sa.Table, key: Any) -> NoReturn: ...
        def _cursor(self) -> Any: ...
        def _equal(self, column: sa.Column[Any], value: Any) -> sa.ColumnElement[bool]: ...

    def prefetch(self, table: sa.Table, keys: list[Any]) -> None:
        """Load many rows in one query, so later :meth:`get` calls need no round trip. A key
        raises what :meth:`get` of it raises (:class:`UnstorableValueError` for a value its
        column refuses), before anything is sent."""
        physical, name, pk_names, converters, *_ = self._info.get(table) or self._describe(table)
        read = self._read
        wanted: set[tuple[Any, ...]] = set()
        for key in keys:
            k = key if isinstance(key, tuple) else (key,)
            if len(k) != len(pk_names):
                self._key(table, k)  # raises the error naming the table and its key
            if converters.keys is not None:
                k = converters.key(k, lookup=True)
                if k is None:
                    continue  # an integer its column cannot hold: no row has it
            try:
                if (name, k) not in read:
                    wanted.add(k)
            except TypeError:
                self._unhashable(table, k)
        if not wanted:
            return
        with refusals():
            self._prefetch(physical, wanted)

    def _prefetch(self, physical: sa.Table, wanted: set[tuple[Any, ...]]) -> None:
        """Read the rows of ``wanted`` (keys as their columns store them, none read yet)."""
        name = physical.name
        pk = list(physical.primary_key.columns)
        read = self._read
        for k in wanted:
            read[(name, k)] = None
        ordered = list(wanted)
        plan = table_plan(self.conn.dialect, physical) if self._postgresql else None
        if self._batch_prefetch and plan is not None and plan.key_type is not None:
            self._deferred.append((plan, ordered))
            return
        if self._deferred:
            self._run_deferred()
        if self._lock_rows:
            self._locks.take(self._cursor, {row_lock_key((name, k)) for k in ordered})
        if plan is not None and plan.key_type is not None:
            # One round trip, no SQL compilation: ``pk = ANY(array)`` on the driver's cursor.
            cursor = driver_cursor(self.conn)
            plan.select_keys(cursor, ordered)
            self._remember_rows(plan, cursor, ordered)
            return
        as_requested = _as_requested(self.conn.dialect, physical, ordered)
        single = self._postgresql and any(
            pg_single_precision(self.conn.dialect, c.type) for c in pk
        )
        for start in range(0, len(ordered), 1000):
            chunk = ordered[start : start + 1000]
            if single:  # each value cast as its column stores it (see _equal)
                keys = [sa.and_(*map(self._equal, pk, k)) for k in chunk]
                condition: sa.ColumnElement[bool] = sa.or_(*keys)
            elif len(pk) == 1:
                condition = pk[0].in_([k[0] for k in chunk])
            else:
                condition = sa.tuple_(*pk).in_(chunk)
            for found in self.conn.execute(sa.select(physical).where(condition)):
                row = dict(found._mapping)
                k = tuple(row[c.name] for c in pk)
                self._read[(physical.name, as_requested(k) if as_requested else k)] = row

    def _run_deferred(self) -> None:
        """Run the deferred prefetches in one round trip: lock every key (in one sorted
        order across tables, so two batches never wait on each other in a cycle), then
        read each table; the reads start after the locks are granted (pipeline mode runs
        the statements in order), so they see what the previous holders committed."""
        deferred, self._deferred = self._deferred, []
        driver = self.conn.connection.driver_connection  # type: ignore[union-attr]
        reads = []
        with refusals(), driver.pipeline():
            if self._lock_rows:
                hashes = {row_lock_key((p.table_name, k)) for p, keys in deferred for k in keys}
                self._locks.take(driver.cursor, hashes)
            for plan, keys in deferred:
                cursor = driver.cursor()
                plan.select_keys(cursor, keys)
                reads.append((plan, cursor))
        for (plan, keys), (_, cursor) in zip(deferred, reads, strict=True):
            self._remember_rows(plan, cursor, keys)

    def _remember_rows(self, plan: TablePlan, cursor: Any, keys: list[tuple[Any, ...]]) -> None:
        """Keep the rows a :meth:`TablePlan.select_keys` query of ``keys`` returned as read."""
        names = plan.columns
        index = names.index(plan.keys[0])
        as_requested = _as_requested(self.conn.dialect, plan.table, keys)
        for values in cursor:
            k = (values[index],)
            self._read[(plan.table_name, as_requested(k) if as_requested else k)] = dict(
                zip(names, values, strict=True)
            )


def row_lock_key(key: tuple[str, tuple[Any, ...]]) -> int:
    """A signed 64-bit advisory-lock key for one row of one table."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _as_requested(
    dialect: Dialect, table: sa.Table, keys: list[tuple[Any, ...]]
) -> Callable[[tuple[Any, ...]], tuple[Any, ...]] | None:
    """For a table keyed by ``CHAR(n)`` (PostgreSQL returns such values blank-padded), or
    by a column comparing keys otherwise than Python (:func:`~projections.sql_values.
    key_equality`: ``timetz``, ``citext``, SQLite's ``NOCASE``): the key asked for of a row
    read back, so ``'ab    '`` is filed under ``'ab'``, ``'AB'`` under the ``'ab'`` it matched;
    ``None`` for any other table."""
    columns = table.primary_key.columns
    postgresql = dialect.name == "postgresql"
    pads = tuple(postgresql and isinstance(c.type, sa.CHAR) for c in columns)
    keyed = tuple(map(as_keyed, key_equality(dialect, table)))
    if not any(pads) and not any(keyed):
        return None

    def unpadded(key: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(
            v.rstrip(" ") if pad and isinstance(v, str) else as_key(v) if as_key else v
            for v, pad, as_key in zip(key, pads, keyed, strict=True)
        )

    requested = {unpadded(k): k for k in keys}
    return lambda key: requested.get(unpadded(key), key)
