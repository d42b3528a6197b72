"""The handler's view of a SQL store transaction: reads see earlier writes of the same batch;
writes are folded per key and flushed as a few batched statements at commit."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa
from psycopg.types.json import Json
from sqlalchemy.engine import Dialect

_UNREAD: Any = object()
# Takes the locks in the list's order; the hashes travel as one JSON list.
_LOCK_MANY = "SELECT count(pg_advisory_xact_lock(h::bigint)) FROM json_array_elements_text(%s) t(h)"
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

    def __init__(
        self,
        conn: sa.Connection,
        tables: Mapping[sa.Table, sa.Table],
        *,
        lock_rows: bool = True,
        new_rows: NewRows | None = None,
        batch_prefetch: bool = False,
    ) -> None:
        self.conn = conn
        self._new_rows = new_rows if conn.dialect.name == "postgresql" else None
        self._postgresql = conn.dialect.name == "postgresql"
        # A rebuild writes shadow tables no other transaction touches: no row locks needed.
        self._lock_rows = lock_rows and self._postgresql
        self._tables = tables
        self._pk_names: dict[sa.Table, tuple[str, ...]] = {}
        self._info: dict[sa.Table, tuple[sa.Table, str, tuple[str, ...]]] = {}
        self._pending: dict[tuple[str, tuple[Any, ...]], tuple[str, dict[str, Any] | None]] = {}
        self._read: dict[tuple[str, tuple[Any, ...]], dict[str, Any] | None] = {}
        self._order: list[sa.Table] = []
        self.invalidated: set[str] = set()
        # PostgreSQL: prefetches wait for the first read, then go out in one round trip.
        self._batch_prefetch = batch_prefetch and self._postgresql
        self._deferred: list[tuple[_TablePlan, list[tuple[Any, ...]]]] = []

    def _describe(self, table: sa.Table) -> tuple[sa.Table, str, tuple[str, ...]]:
        """``(physical table, its name, primary key column names)``, looked up once."""
        info = self._info.get(table)
        if info is None:
            physical = self._physical(table)
            info = self._info[table] = (physical, physical.name, self._pk(table))
        return info

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
        if self._deferred:
            self._run_deferred()
        physical, name, pk = self._info.get(table) or self._describe(table)
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) != len(pk):
            self._key(table, key)  # raises the error naming the table and its key
        k = (name, key)
        pending = self._pending.get(k)
        if pending is None:
            row = self._read.get(k, _UNREAD)
            if row is _UNREAD:
                return self._load(physical, k)
            return None if row is None else row.copy()
        op, row = pending
        if op == _DELETE:
            return None
        if op == _REPLACE:
            return dict(row or {})
        base = self._read.get(k, _UNREAD)
        if base is _UNREAD:
            base = self._load(physical, k)
        return {**(base or {}), **(row or {})}

    def _load(self, physical: sa.Table, k: tuple[str, tuple[Any, ...]]) -> dict[str, Any] | None:
        row = self._read.get(k, _UNREAD)
        if row is not _UNREAD:
            return None if row is None else row.copy()
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
        physical, name, pk_names = self._info.get(table) or self._describe(table)
        pk = list(physical.primary_key.columns)
        read = self._read
        wanted: set[tuple[Any, ...]] = set()
        for key in keys:
            k = key if isinstance(key, tuple) else (key,)
            if len(k) != len(pk_names):
                self._key(table, k)  # raises the error naming the table and its key
            if (name, k) not in read:
                wanted.add(k)
        if not wanted:
            return
        for k in wanted:
            read[(name, k)] = None
        ordered = list(wanted)
        plan = _plan(self.conn.dialect, physical) if self._postgresql else None
        if self._batch_prefetch and plan is not None and plan.key_type is not None:
            self._deferred.append((plan, ordered))
            return
        if self._deferred:
            self._run_deferred()
        if self._lock_rows:
            hashes = sorted({row_lock_key((name, k)) for k in ordered})
            _driver_cursor(self.conn).execute(_LOCK_MANY, (Json(hashes, dumps=orjson.dumps),))
        if plan is not None and plan.key_type is not None:
            # One round trip, no SQL compilation: ``pk = ANY(array)`` on the driver's cursor.
            cursor = _driver_cursor(self.conn)
            plan.select_keys(cursor, ordered)
            self._remember_rows(plan, cursor)
            return
        for start in range(0, len(ordered), 1000):
            chunk = ordered[start : start + 1000]
            condition = (
                pk[0].in_([k[0] for k in chunk]) if len(pk) == 1 else sa.tuple_(*pk).in_(chunk)
            )
            for found in self.conn.execute(sa.select(physical).where(condition)):
                row = dict(found._mapping)
                self._read[(physical.name, tuple(row[c.name] for c in pk))] = row

    def _run_deferred(self) -> None:
        """Run the deferred prefetches in one round trip: lock every key (in one sorted
        order across tables, so two batches never wait on each other in a cycle), then
        read each table; the reads start after the locks are granted (pipeline mode runs
        the statements in order), so they see what the previous holders committed."""
        deferred, self._deferred = self._deferred, []
        driver = self.conn.connection.driver_connection  # type: ignore[union-attr]
        reads = []
        with driver.pipeline():
            if self._lock_rows:
                hashes = sorted(
                    {row_lock_key((plan.table_name, k)) for plan, keys in deferred for k in keys}
                )
                driver.cursor().execute(_LOCK_MANY, (Json(hashes, dumps=orjson.dumps),))
            for plan, keys in deferred:
                cursor = driver.cursor()
                plan.select_keys(cursor, keys)
                reads.append((plan, cursor))
        for plan, cursor in reads:
            self._remember_rows(plan, cursor)

    def _remember_rows(self, plan: _TablePlan, cursor: Any) -> None:
        """Keep the rows a :meth:`_TablePlan.select_keys` query returned as read."""
        names = plan.columns
        index = names.index(plan.keys[0])
        for values in cursor:
            self._read[(plan.table_name, (values[index],))] = dict(zip(names, values, strict=True))

    def upsert(self, table: sa.Table, row: Mapping[str, Any]) -> None:
        physical, name, pk = self._info.get(table) or self._describe(table)
        if physical not in self._order:
            self._order.append(physical)
        try:
            k = (name, (row[pk[0]],) if len(pk) == 1 else tuple([row[c] for c in pk]))
        except KeyError as exc:
            raise ValueError(f"{table.name}: row lacks primary key column {exc}") from None
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
        if self._deferred:
            self._run_deferred()
        self.flush()
        query = sa.select(physical).where(*[physical.c[name] == v for name, v in equals.items()])
        return [dict(row._mapping) for row in self.conn.execute(query)]

    def invalidate(self, *tags: str) -> None:
        for tag in tags:
            if not isinstance(tag, str):
                raise TypeError(f"cache tags are strings, got {tag!r}")
        self.invalidated.update(tags)

    def _remember(self, physical: sa.Table) -> None:
        if physical not in self._order:
            self._order.append(physical)

    def flush(self) -> None:
        """Write every pending change: deletes, then upserts grouped by column set."""
        if self._deferred:
            self._run_deferred()  # their row locks are part of the batch's isolation
        if not self._pending:
            return
        by_table: dict[str, list[Any]] = {}
        for item in self._pending.items():
            items = by_table.get(item[0][0])
            if items is None:
                by_table[item[0][0]] = [item]
            else:
                items.append(item)
        for physical in self._order:
            items = by_table.get(physical.name)
            if items:
                self._flush_table(physical, items)
        self._read.clear()
        self._pending.clear()

    def _flush_table(self, physical: sa.Table, items: list[Any]) -> None:
        """Write ``items`` (``((name, key), (op, row))`` of this table, in pending order)."""
        pk = list(physical.primary_key.columns)
        deletes: list[tuple[Any, ...]] = []
        upserts: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        plan = _plan(self.conn.dialect, physical) if self._postgresql else None
        copies: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        new_rows = self._new_rows if plan is not None else None
        # Unread keys are taken for new until a COPY of this table met an existing one.
        unread_new = new_rows is not None and physical.name not in new_rows.existing_found
        read = self._read
        for k, (op, row) in items:
            if op != _UPSERT:
                deletes.append(k[1])
                if op == _DELETE or row is None:
                    continue
            elif new_rows is not None:
                seen = read.get(k, _UNREAD)
                if seen is None or (seen is _UNREAD and unread_new):
                    group = copies.get(columns := tuple(row))
                    if group is None:
                        copies[columns] = [row]
                    else:
                        group.append(row)
                    continue
            group = upserts.get(columns := tuple(row))
            if group is None:
                upserts[columns] = [row]
            else:
                group.append(row)
        # Grouped by the rows' key order (cheap), then by column set (sorted names).
        copies = _by_column_set(copies)
        upserts = _by_column_set(upserts)
        if deletes:
            if plan is not None and plan.key_type is not None:
                firsts = [k[0] for k in deletes]
                document = plan.json_keys(firsts)
                if document is None:
                    _driver_cursor(self.conn).execute(plan.delete_any, (firsts,))
                else:
                    _driver_cursor(self.conn).execute(
                        plan.delete_any_json, (Json(document, dumps=_as_is),)
                    )
            else:
                params = [{f"k{i}": v for i, v in enumerate(key)} for key in deletes]
                where = [c == sa.bindparam(f"k{i}") for i, c in enumerate(pk)]
                self.conn.execute(sa.delete(physical).where(*where), params)
        for columns, rows in copies.items():
            if not self._copy(plan, columns, rows):  # type: ignore[arg-type]
                upserts.setdefault(columns, []).extend(rows)
        for columns, rows in upserts.items():
            document = None if plan is None else plan.json_rows(columns, rows)
            if document is not None:
                # The rows travel as one JSON document (encoded in C), read by json_to_recordset.
                statement = plan.upsert_json(columns)  # type: ignore[union-attr]
                _driver_cursor(self.conn).execute(statement, (Json(document, dumps=_as_is),))
            elif plan is not None:
                # One statement per column set: the rows travel as one array per column.
                statement = plan.upsert_unnest(columns)
                arrays = [[row[name] for row in rows] for name in columns]
                _driver_cursor(self.conn).execute(statement, arrays)
            else:
                statement = _upsert_statement(self.conn.dialect.name, physical, columns)
                self.conn.execute(statement, rows)

    def _copy(self, plan: _TablePlan, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> bool:
        """COPY rows that are probably new; ``False`` (nothing written) when a value needs the
        upsert's conversions or the COPY fails: a key exists after all (or a partial row of
        an existing key misses a NOT NULL column); the upsert then decides what happens."""
        values = _value_tuples(columns, rows)
        types = plan.copy_types_of(columns, values)
        if types is None:
            return False
        cursor = _driver_cursor(self.conn)
        cursor.execute("SAVEPOINT rm_copy_new")
        try:
            with cursor.copy(plan.copy_statement(columns)) as copy:
                copy.set_types(types)
                write_row = copy.write_row
                for value in values:
                    write_row(value)
        except Exception:
            cursor.execute("ROLLBACK TO SAVEPOINT rm_copy_new")
            self._new_rows.existing_found.add(plan.table_name)  # type: ignore[union-attr]
            return False
        cursor.execute("RELEASE SAVEPOINT rm_copy_new")
        return True


class NewRows:
    """Tables filled from empty by one writer (a rebuild's shadow tables).

    There, a row whose key the transaction has not read back from the table is most likely
    new: :class:`SqlTx` COPYs such rows, and those it read and found missing, instead of
    upserting them. A savepoint makes this exact: when a key exists after all, the COPY is
    rolled back and the rows are upserted, and from then on that table COPYs only rows
    known to be missing."""

    def __init__(self) -> None:
        self.existing_found: set[str] = set()


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
        self.table_name = table.name
        self.columns = [c.name for c in table.columns]
        self.types = {c.name: c.type.compile(dialect=dialect) for c in table.columns}
        self.cast_types = {name: _without_modifiers(sql) for name, sql in self.types.items()}
        self.keys = [c.name for c in table.primary_key.columns]
        self.quote = quote
        self.key_type = self.cast_types[self.keys[0]] if len(self.keys) == 1 else None
        column_list = ", ".join(quote(c) for c in self.columns)
        if self.key_type is not None:
            where = f"{quote(self.keys[0])} = ANY(%b::{self.key_type}[])"
            self.select_any = f"SELECT {column_list} FROM {self.table_sql} WHERE {where}"
            self.delete_any = f"DELETE FROM {self.table_sql} WHERE {where}"
            listed = f"ARRAY(SELECT json_array_elements_text(%s::json))::{self.key_type}[]"
            where = f"{quote(self.keys[0])} = ANY({listed})"
            self.select_any_json = f"SELECT {column_list} FROM {self.table_sql} WHERE {where}"
            self.delete_any_json = f"DELETE FROM {self.table_sql} WHERE {where}"
        self._upserts: dict[tuple[str, ...], str] = {}
        self._json_upserts: dict[tuple[str, ...], str] = {}
        self.json_kinds = {c.name: _json_kind(c.type) for c in table.columns}
        self.binary_types = {c.name: _binary_type(c.type) for c in table.columns}
        self._copies: dict[tuple[str, ...], str] = {}

    def _on_conflict(self, columns: tuple[str, ...]) -> str:
        quote = self.quote
        conflict = ", ".join(quote(k) for k in self.keys)
        updates = ", ".join(
            f"{quote(c)} = excluded.{quote(c)}" for c in columns if c not in self.keys
        )
        action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        return f"ON CONFLICT ({conflict}) {action}"

    def upsert_unnest(self, columns: tuple[str, ...]) -> str:
        statement = self._upserts.get(columns)
        if statement is None:
            names = ", ".join(self.quote(c) for c in columns)
            arrays = ", ".join(f"%b::{self.cast_types[c]}[]" for c in columns)
            statement = (
                f"INSERT INTO {self.table_sql} ({names}) SELECT * FROM unnest({arrays}) "
                f"{self._on_conflict(columns)}"
            )
            self._upserts[columns] = statement
        return statement

    def upsert_json(self, columns: tuple[str, ...]) -> str:
        statement = self._json_upserts.get(columns)
        if statement is None:
            names = ", ".join(self.quote(c) for c in columns)
            record = ", ".join(f"{self.quote(c)} {self.types[c]}" for c in columns)
            statement = (
                f"INSERT INTO {self.table_sql} ({names}) SELECT {names} "
                f"FROM json_to_recordset(%s::json) AS r({record}) {self._on_conflict(columns)}"
            )
            self._json_upserts[columns] = statement
        return statement

    def copy_statement(self, columns: tuple[str, ...]) -> str:
        statement = self._copies.get(columns)
        if statement is None:
            names = ", ".join(self.quote(c) for c in columns)
            statement = f"COPY {self.table_sql} ({names}) FROM STDIN (FORMAT BINARY)"
            self._copies[columns] = statement
        return statement

    def copy_types(self, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> list[str] | None:
        """The types of a binary COPY of ``rows``, when every value is of the exact Python type
        its column's binary form takes (an aware datetime for a ``timestamptz``, a naive one
        for a ``timestamp``: no conversion the upsert would make); ``None`` otherwise."""
        return self.copy_types_of(columns, _value_tuples(columns, rows))

    def copy_types_of(
        self, columns: tuple[str, ...], values: list[tuple[Any, ...]]
    ) -> list[str] | None:
        """:meth:`copy_types` of rows given as value tuples (in ``columns``' order)."""
        types = []
        kinds = []
        for name in columns:
            kind = self.json_kinds.get(name)
            binary = self.binary_types.get(name)
            if kind is None or binary is None:
                return None
            kinds.append(kind)
            types.append(binary)
        # One pass: the distinct tuples of value types (rows of a group mostly share one).
        shapes = set(map(tuple, map(map, repeat(type), values)))
        for shape in shapes:
            for found, kind in zip(shape, kinds, strict=True):
                if found not in kind:
                    return None
        for i, kind in enumerate(kinds):
            if not any(shape[i] is datetime for shape in shapes):
                continue
            moments = list(filter(None, map(itemgetter(i), values)))  # datetimes are truthy
            zones = set(map(attrgetter("tzinfo"), moments))
            if kind is not _JSON_DATETIME:
                if zones != {None}:
                    return None
                continue
            if None in zones:
                return None
            if not all(type(zone) in _FIXED_ZONE_TYPES for zone in zones) and any(
                value.utcoffset() is None for value in moments
            ):
                return None
        return types

    def select_keys(self, cursor: Any, keys: list[tuple[Any, ...]]) -> None:
        """Execute the select of the rows with these (one-column) keys on ``cursor``."""
        firsts = [k[0] for k in keys]
        document = self.json_keys(firsts)
        if document is None:
            cursor.execute(self.select_any, (firsts,))
        else:
            cursor.execute(self.select_any_json, (Json(document, dumps=_as_is),))

    def json_keys(self, keys: list[Any]) -> bytes | None:
        """The values of a one-column key as a JSON list, when they read back exactly."""
        kind = self.json_kinds.get(self.keys[0])
        if kind is not _JSON_TEXT and kind is not _JSON_INTEGER:
            return None
        if not set(map(type, keys)) <= kind:  # type: ignore[operator]
            return None
        try:
            return orjson.dumps(keys)
        except orjson.JSONEncodeError:
            return None

    def json_rows(self, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> bytes | None:
        """``rows`` as one JSON document when each value's JSON text reads back into its column
        exactly as the array path would send it; ``None`` (use the arrays) otherwise."""
        for name in columns:
            kind = self.json_kinds.get(name)
            if kind is None:
                return None
            found = set(map(type, map(itemgetter(name), rows)))
            if not found <= kind:
                return None
            if kind is not _JSON_DATETIME and kind is not _JSON_NAIVE or datetime not in found:
                continue
            # A naive column ignores a text offset; orjson writes offsets in whole minutes;
            # psycopg refuses a list mixing naive and aware values.
            naive = aware = False
            for value in map(itemgetter(name), rows):
                if value is None:
                    continue
                if value.tzinfo is None:
                    naive = True
                    continue
                aware = True
                if kind is _JSON_NAIVE:
                    return None
                offset = value.utcoffset()
                if offset is None or offset.seconds % 60 or offset.microseconds:
                    return None
            if naive and aware:
                return None
        try:  # column names read back from the database are str subclasses (quoted_name)
            return orjson.dumps(rows, option=orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError:  # an integer beyond 64 bits, a lone surrogate
            return None


_plans: dict[tuple[str, sa.Table], _TablePlan | None] = {}
_MODIFIERS = re.compile(r"\s*\([^)]*\)|\s+COLLATE\s+\S+", re.IGNORECASE)


def _without_modifiers(sql_type: str) -> str:
    """``sql_type`` without length, precision or collation, for casting parameters.

    An explicit cast to ``VARCHAR(5)`` cuts a longer value short without a word (the SQL
    rule for explicit casts), where storing it in the column fails "value too long": cast
    to ``VARCHAR``, and the INSERT's own assignment to the column decides, as a plain
    INSERT would. A key longer than its column then matches no row instead of another.
    """
    base = _MODIFIERS.sub("", sql_type)
    return "BPCHAR" if base.upper() in {"CHAR", "CHARACTER", "NCHAR"} else base


def _plan(dialect: Dialect, table: sa.Table) -> _TablePlan | None:
    """The table's driver-level plan, or ``None`` when a column needs SQLAlchemy's processing."""
    key = (dialect.name, table)
    if key not in _plans:
        plain = dialect.name == "postgresql" and all(_plain(c.type) for c in table.columns)
        _plans[key] = _TablePlan(dialect, table) if plain else None
    return _plans[key]


_JSON_TEXT = frozenset({str, type(None)})
_JSON_INTEGER = frozenset({int, type(None)})
_JSON_BOOLEAN = frozenset({bool, type(None)})
_JSON_DATETIME = frozenset({datetime, type(None)})
_JSON_NAIVE = frozenset({datetime, type(None)})  # a distinct object: timestamp without time zone


def _json_kind(column_type: sa.types.TypeEngine[Any]) -> frozenset[type] | None:
    """The Python types whose JSON text a column of this type reads exactly as psycopg would
    send them; ``None`` for types left to the array path (lengths, floats, numerics...)."""
    if isinstance(column_type, sa.Enum | sa.JSON | sa.ARRAY):
        return None
    if isinstance(column_type, sa.String):
        return _JSON_TEXT if column_type.length is None else None  # varchar(n) casts truncate
    if isinstance(column_type, sa.Integer | sa.BigInteger | sa.SmallInteger):
        return _JSON_INTEGER
    if isinstance(column_type, sa.Boolean):
        return _JSON_BOOLEAN
    if isinstance(column_type, sa.DateTime):
        return _JSON_DATETIME if column_type.timezone else _JSON_NAIVE
    return None


def _binary_type(column_type: sa.types.TypeEngine[Any]) -> str | None:
    """The PostgreSQL type whose binary form a COPY sends for a column of a JSON kind."""
    if _json_kind(column_type) is None:
        return None
    if isinstance(column_type, sa.String):
        return "text"
    if isinstance(column_type, sa.BigInteger):
        return "int8"
    if isinstance(column_type, sa.SmallInteger):
        return "int2"
    if isinstance(column_type, sa.Integer):
        return "int4"
    if isinstance(column_type, sa.Boolean):
        return "bool"
    if isinstance(column_type, sa.DateTime):
        return "timestamptz" if column_type.timezone else "timestamp"
    return None


# Time zone classes whose utcoffset() is never None.
_FIXED_ZONE_TYPES = (timezone, ZoneInfo)


def _value_tuples(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    if len(columns) == 1:
        name = columns[0]
        return [(row[name],) for row in rows]
    return list(map(itemgetter(*columns), rows))


def _by_column_set(
    groups: dict[tuple[str, ...], list[dict[str, Any]]],
) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Groups keyed by the rows' column order, merged by column set (sorted names)."""
    merged: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for columns, rows in groups.items():
        key = tuple(sorted(columns))
        found = merged.get(key)
        if found is None:
            merged[key] = rows
        else:
            found.extend(rows)
    return merged


def _as_is(document: bytes) -> bytes:
    return document


def _driver_cursor(conn: sa.Connection) -> Any:
    return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
