"""Driver-level SQL for tables whose columns psycopg reads and writes as SQLAlchemy would.

For such a table a :class:`TablePlan` holds the statements the hot paths send straight to
the psycopg cursor, skipping SQLAlchemy's compilation and row objects: ``key = ANY(array)``
reads and deletes, upserts from one JSON document or one array per column, and binary COPY.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa
from psycopg.types.json import Json
from sqlalchemy.engine import Dialect

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


class TablePlan:
    """Driver-level SQL for one physical table whose columns are all of plain types."""

    def __init__(self, dialect: Dialect, table: sa.Table) -> None:
        quote = dialect.identifier_preparer.quote
        self.table_sql = dialect.identifier_preparer.format_table(table)
        self.table = table
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
            # Sent without parameters, so not formatted: a name's ``%``, which the dialect's
            # quoting doubles for formatted statements, must be one (it named no table).
            statement = statement.replace("%%", "%")
            self._copies[columns] = statement
        return statement

    def copy_types(self, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> list[str] | None:
        """The types of a binary COPY of ``rows``, when every value is of the exact Python type
        its column's binary form takes (an aware datetime for a ``timestamptz``, a naive one
        for a ``timestamp``: no conversion the upsert would make); ``None`` otherwise."""
        return self.copy_types_of(columns, value_tuples(columns, rows))

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
            cursor.execute(self.select_any_json, (Json(document, dumps=as_is),))

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


_plans: dict[tuple[str, sa.Table], TablePlan | None] = {}
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


def table_plan(dialect: Dialect, table: sa.Table) -> TablePlan | None:
    """The table's driver-level plan, or ``None`` when a column needs SQLAlchemy's processing:
    a type it converts, or a client-side ``default`` (a Python value, callable or
    ``Sequence``) that only SQLAlchemy's statements fill in for a new row that omits the
    column. (``onupdate`` is applied by neither: an upsert updates the columns it names.)"""
    key = (dialect.name, table)
    if key not in _plans:
        plain = dialect.name == "postgresql" and all(
            _plain(c.type) and c.default is None and c.onupdate is None for c in table.columns
        )
        _plans[key] = TablePlan(dialect, table) if plain else None
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


def value_tuples(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    if len(columns) == 1:
        name = columns[0]
        return [(row[name],) for row in rows]
    return list(map(itemgetter(*columns), rows))


def by_column_set(
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


def as_is(document: bytes) -> bytes:
    return document


def driver_cursor(conn: sa.Connection) -> Any:
    return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]


def upsert_statement(dialect: str, table: sa.Table, columns: tuple[str, ...]) -> sa.Executable:
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
