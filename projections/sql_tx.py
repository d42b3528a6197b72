"""The handler's view of a SQL store transaction: reads see earlier writes of the same batch;
writes are folded per key and flushed as a few batched statements at commit."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

_LOCK_MANY = "SELECT count(pg_advisory_xact_lock(h)) FROM unnest(%b::bigint[]) AS t(h)"
_DELETE = "delete"
_UPSERT = "upsert"
_REPLACE = "replace"


class SqlTx:
    """Implements :class:`projections.api.Tx` over one open SQLAlchemy connection.

    ``tables`` maps each of the projection's tables to the physical table it
    writes (the same one normally; a shadow copy during a rebuild).

    On PostgreSQL every row read first takes a transaction-scoped advisory lock on
    its key, so two lanes that read-modify-write the same
    row (a per-customer total fed by per-order lanes) serialize instead of
    losing an update, even when the row does not exist yet. SQLite transactions
    are serialized already.
    """

    def __init__(self, conn: sa.Connection, tables: Mapping[sa.Table, sa.Table]) -> None:
        self.conn = conn
        self._lock_rows = conn.dialect.name == "postgresql"
        self._tables = tables
        self._pk_names: dict[sa.Table, tuple[str, ...]] = {}
        self._pending: dict[tuple[str, tuple[Any, ...]], tuple[str, dict[str, Any] | None]] = {}
        self._read: dict[tuple[str, tuple[Any, ...]], dict[str, Any] | None] = {}
        self._order: list[sa.Table] = []

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
        return key

    def _row_key(self, table: sa.Table, row: Mapping[str, Any]) -> tuple[Any, ...]:
        try:
            return tuple([row[name] for name in self._pk(table)])
        except KeyError as exc:
            raise ValueError(f"{table.name}: row lacks primary key column {exc}") from None

    def get(self, table: sa.Table, key: Any) -> dict[str, Any] | None:
        physical = self._physical(table)
        k = (physical.name, self._key(table, key))
        pending = self._pending.get(k)
        if pending is not None:
            op, row = pending
            if op == _DELETE:
                return None
            if op == _REPLACE:
                return dict(row or {})
            base = self._load(physical, k)
            return {**(base or {}), **(row or {})}
        return self._load(physical, k)

    def _load(self, physical: sa.Table, k: tuple[str, tuple[Any, ...]]) -> dict[str, Any] | None:
        if k in self._read:
            row = self._read[k]
            return None if row is None else dict(row)
        where = [c == v for c, v in zip(physical.primary_key.columns, k[1], strict=True)]
        if self._lock_rows:
            # A separate statement: READ COMMITTED takes the next statement's snapshot after
            # the lock is granted, so the read below sees what the previous holder committed.
            self.conn.execute(sa.select(sa.func.pg_advisory_xact_lock(row_lock_key(k))))
        found = self.conn.execute(sa.select(physical).where(*where)).first()
        row = None if found is None else dict(found._mapping)
        self._read[k] = row
        return None if row is None else dict(row)

    def prefetch(self, table: sa.Table, keys: list[Any]) -> None:
        """Load many rows in one query, so later :meth:`get` calls need no round trip."""
        physical = self._physical(table)
        pk = list(physical.primary_key.columns)
        wanted = {self._key(table, key) for key in keys}
        wanted = {k for k in wanted if (physical.name, k) not in self._read}
        if not wanted:
            return
        for k in wanted:
            self._read[(physical.name, k)] = None
        ordered = list(wanted)
        if self._lock_rows:
            hashes = sorted({row_lock_key((physical.name, k)) for k in ordered})
            _driver_cursor(self.conn).execute(_LOCK_MANY, (hashes,))
        plan = _plan(self.conn.dialect, physical) if self._lock_rows else None
        if plan is not None and plan.key_type is not None:
            # One round trip, no SQL compilation: ``pk = ANY(array)`` on the driver's cursor.
            cursor = _driver_cursor(self.conn)
            names = plan.columns
            cursor.execute(plan.select_any, ([k[0] for k in ordered],))
            index = names.index(pk[0].name)
            for values in cursor:
                self._read[(physical.name, (values[index],))] = dict(
                    zip(names, values, strict=True)
                )
            return
        for start in range(0, len(ordered), 1000):
            chunk = ordered[start : start + 1000]
            condition = (
                pk[0].in_([k[0] for k in chunk]) if len(pk) == 1 else sa.tuple_(*pk).in_(chunk)
            )
            for found in self.conn.execute(sa.select(physical).where(condition)):
                row = dict(found._mapping)
                self._read[(physical.name, tuple(row[c.name] for c in pk))] = row

    def upsert(self, table: sa.Table, row: Mapping[str, Any]) -> None:
        physical = self._physical(table)
        self._remember(physical)
        k = (physical.name, self._row_key(table, row))
        pending = self._pending.get(k)
        if pending is None:
            self._pending[k] = (_UPSERT, dict(row))
        elif pending[0] == _DELETE:
            self._pending[k] = (_REPLACE, dict(row))
        else:
            self._pending[k] = (pending[0], {**(pending[1] or {}), **row})

    def delete(self, table: sa.Table, key: Any) -> None:
        physical = self._physical(table)
        self._remember(physical)
        self._pending[(physical.name, self._key(table, key))] = (_DELETE, None)

    def find(self, table: sa.Table, **equals: Any) -> list[dict[str, Any]]:
        """Rows whose columns equal ``equals`` (pending writes are flushed first)."""
        physical = self._physical(table)
        self.flush()
        query = sa.select(physical).where(*[physical.c[name] == v for name, v in equals.items()])
        return [dict(row._mapping) for row in self.conn.execute(query)]

    def _remember(self, physical: sa.Table) -> None:
        if physical not in self._order:
            self._order.append(physical)

    def flush(self) -> None:
        """Write every pending change: deletes, then upserts grouped by column set."""
        if not self._pending:
            return
        for physical in self._order:
            self._flush_table(physical)
        self._read.clear()
        self._pending.clear()

    def _flush_table(self, physical: sa.Table) -> None:
        pk = list(physical.primary_key.columns)
        deletes: list[tuple[Any, ...]] = []
        upserts: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for (name, key), (op, row) in self._pending.items():
            if name != physical.name:
                continue
            if op in (_DELETE, _REPLACE):
                deletes.append(key)
            if op in (_UPSERT, _REPLACE) and row is not None:
                upserts.setdefault(tuple(sorted(row)), []).append(row)
        plan = _plan(self.conn.dialect, physical) if self._lock_rows else None
        if deletes:
            if plan is not None and plan.key_type is not None:
                _driver_cursor(self.conn).execute(plan.delete_any, ([k[0] for k in deletes],))
            else:
                params = [{f"k{i}": v for i, v in enumerate(key)} for key in deletes]
                where = [c == sa.bindparam(f"k{i}") for i, c in enumerate(pk)]
                self.conn.execute(sa.delete(physical).where(*where), params)
        for columns, rows in upserts.items():
            if plan is not None:
                # One statement per column set: the rows travel as one array per column.
                statement = plan.upsert_unnest(columns)
                arrays = [[row[name] for row in rows] for name in columns]
                _driver_cursor(self.conn).execute(statement, arrays)
            else:
                statement = _upsert_statement(self.conn.dialect.name, physical, columns)
                self.conn.execute(statement, rows)


def _upsert_statement(dialect: str, table: sa.Table, columns: tuple[str, ...]) -> sa.Executable:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(table)
    keys = [c.name for c in table.primary_key.columns]
    updates = {c: statement.excluded[c] for c in columns if c not in keys}
    if not updates:
        return statement.on_conflict_do_nothing(index_elements=keys)
    return statement.on_conflict_do_update(index_elements=keys, set_=updates)


def row_lock_key(key: tuple[str, tuple[Any, ...]]) -> int:
    """A signed 64-bit advisory-lock key for one row of one table."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# -- PostgreSQL fast paths -----------------------------------------------------------------

# Column types whose values psycopg sends and receives as SQLAlchemy would (no result or
# bind processing), so rows can bypass SQLAlchemy's compilation and row objects.
_PLAIN_TYPES = (
    sa.String,
    sa.Integer,
    sa.BigInteger,
    sa.SmallInteger,
    sa.Boolean,
    sa.DateTime,
    sa.Date,
    sa.Time,
    sa.Interval,
    sa.LargeBinary,
)


def _plain(column_type: sa.types.TypeEngine[Any]) -> bool:
    if isinstance(column_type, sa.Enum | sa.JSON | sa.ARRAY):
        return False
    if isinstance(column_type, sa.Float):
        return not column_type.asdecimal
    if isinstance(column_type, sa.Numeric):
        return bool(column_type.asdecimal)
    return isinstance(column_type, _PLAIN_TYPES)


class _TablePlan:
    """Driver-level SQL for one physical table whose columns are all of plain types."""

    def __init__(self, dialect: Dialect, table: sa.Table) -> None:
        quote = dialect.identifier_preparer.quote
        self.table_sql = dialect.identifier_preparer.format_table(table)
        self.columns = [c.name for c in table.columns]
        self.types = {c.name: c.type.compile(dialect=dialect) for c in table.columns}
        self.keys = [c.name for c in table.primary_key.columns]
        self.quote = quote
        self.key_type = self.types[self.keys[0]] if len(self.keys) == 1 else None
        column_list = ", ".join(quote(c) for c in self.columns)
        if self.key_type is not None:
            where = f"{quote(self.keys[0])} = ANY(%b::{self.key_type}[])"
            self.select_any = f"SELECT {column_list} FROM {self.table_sql} WHERE {where}"
            self.delete_any = f"DELETE FROM {self.table_sql} WHERE {where}"
        self._upserts: dict[tuple[str, ...], str] = {}

    def upsert_unnest(self, columns: tuple[str, ...]) -> str:
        statement = self._upserts.get(columns)
        if statement is None:
            quote = self.quote
            names = ", ".join(quote(c) for c in columns)
            arrays = ", ".join(f"%b::{self.types[c]}[]" for c in columns)
            conflict = ", ".join(quote(k) for k in self.keys)
            updates = ", ".join(
                f"{quote(c)} = excluded.{quote(c)}" for c in columns if c not in self.keys
            )
            action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
            statement = (
                f"INSERT INTO {self.table_sql} ({names}) SELECT * FROM unnest({arrays}) "
                f"ON CONFLICT ({conflict}) {action}"
            )
            self._upserts[columns] = statement
        return statement


_plans: dict[tuple[str, sa.Table], _TablePlan | None] = {}


def _plan(dialect: Dialect, table: sa.Table) -> _TablePlan | None:
    """The table's driver-level plan, or ``None`` when a column needs SQLAlchemy's processing."""
    key = (dialect.name, table)
    if key not in _plans:
        plain = dialect.name == "postgresql" and all(_plain(c.type) for c in table.columns)
        _plans[key] = _TablePlan(dialect, table) if plain else None
    return _plans[key]


def _driver_cursor(conn: sa.Connection) -> Any:
    return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
