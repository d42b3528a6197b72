"""Values as a store keeps them: what a later batch reads back of a value a handler wrote.

:class:`projections.sql_tx.SqlTx` gives a handler the writes of earlier events of the same
batch from memory. Unless those values are stored as the database would store them, a
handler would see ``Decimal("0.5625")`` in a ``NUMERIC(10, 2)`` column inside a batch and
``Decimal("0.56")`` across a batch boundary: the result would depend on where batches fall
(live and replay batches differ). :func:`stored_values` gives, per table, a converter for
each column whose type the database converts values into; ``SqlTx.upsert`` applies them.

Numbers are converted as :mod:`projections.sql_number_values` says; text (``CHAR(n)``
blank-padded, ``VARCHAR(n)`` lengths), enums, arrays: see :mod:`projections.sql_text_values`;
booleans, datetimes and JSON: :mod:`projections.sql_other_values`.

Primary key columns are converted alike, and so are the keys a handler looks up
(:meth:`Converters.key`). A value no column keeps as written (NaN into an integer column or
any SQLite column, which stores it as NULL) is refused naming the column
(:class:`~projections.api.UnstorableValueError`); one a converter does not know (a type the
database refuses, an overflow) is left as it is: the flush then stores or refuses it.
But an integer the column would not keep (payloads carry integers exactly,
whatever their size) is refused at once, naming the column: see
:mod:`projections.sql_limits`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, tzinfo
from decimal import Decimal
from typing import Any, NamedTuple, NoReturn

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from projections.api import WideIntegerError
from projections.sql_decorated_values import decorated, undecorated
from projections.sql_key_equality import compared, keyed
from projections.sql_keys import compile_key
from projections.sql_limits import (
    Bounds,
    Unstorable,
    UnstorableLength,
    UnstorableNowhere,
    UnstorableWide,
    integer_bounds,
    json_refusal,
    value_refusal,
)
from projections.sql_number_values import postgresql_number
from projections.sql_other_values import (
    Converter,
    pg_nul_refusal,
    postgresql_other,
    sqlite_other,
)
from projections.sql_plain_values import plain
from projections.sql_sqlite_numbers import sqlite_integer, sqlite_number, sqlite_rowid
from projections.sql_text_values import Found, pg_array
from projections.sql_value_kinds import SCALAR_TYPES, no_container

__all__ = [
    "Column",
    "Converters",
    "WideIntegerError",
    "key_equality",
    "key_forms",
    "normalize",
    "same_nan",
    "stored_values",
]


class Column(NamedTuple):
    """A converted or checked column of a table."""

    name: str
    convert: Converter | None
    exact: frozenset[type]  # value types that need no conversion
    bounds: Bounds | None  # the integers the column keeps, when not every one
    unwritable: Callable[[Exception], NoReturn] | None  # a JSON column's refusal of one
    unstorable: Callable[[Any, Unstorable], NoReturn]  # refuses what ``convert`` cannot keep
    nul: Unstorable | None = None  # why a plain str holding a NUL is refused (PostgreSQL)


_NONE = type(None)


class Converters:
    """The converters of one table's columns. :meth:`normalize` is compiled once per table
    (as ``dataclasses`` compiles ``__init__``): an upsert pays a test per converted column
    it names, a call only for a value of a type its column converts. So is :meth:`key`:
    a key of its columns' types is returned as it is, after a type test per column."""

    __slots__ = ("_by_name", "columns", "key", "keys", "normalize")

    def __init__(self, columns: tuple[Column, ...], keys: tuple[Column | None, ...]) -> None:
        self.columns = columns
        self._by_name = {column.name: column for column in columns}
        self.normalize: Callable[[dict[str, Any], Any], None] = _compile(columns)
        self.keys = keys if any(keys) else None
        """Per primary key column, its converter (``None`` when no key column has one)."""
        self.key: Callable[..., tuple[Any, ...] | None] = compile_key(
            self.keys, self._converted_key
        )
        """``key(key, lookup=False)``: ``key`` as its columns store it: a row upserted as
        ``{"id": "42"}`` into an integer key is found by ``get(table, 42)``, in its batch as in
        a later one. A key ``lookup`` longer than its column is looked up as its text: it
        matches no row; one with an integer outside its column's bounds is ``None``: no row
        has it."""

    def __bool__(self) -> bool:
        return bool(self.columns)

    def lookup(self, values: dict[str, Any]) -> dict[str, Any] | None:
        """``values`` (by column name, ``tx.find``'s) as :meth:`key` looks up a key's: each
        as its column stores it; ``None`` when no row can have one (an integer outside its
        column's bounds, text that no integer is past them); one its column refuses raises
        :class:`~projections.api.UnstorableValueError` naming the column. A value of its
        column's type costs a dict lookup and a type test."""
        by_name = self._by_name
        out = values
        for name, value in values.items():
            column = by_name.get(name)
            if column is None:
                try:
                    found = plain(value)  # a numpy scalar as psycopg sends it (sqlite3: a BLOB)
                except Unstorable:
                    found = value  # a NaT...: the database refuses it
            else:
                found = self._looked_up(column, value)
                if found is _NOWHERE:
                    return None
            if found is not value:
                if out is values:
                    out = dict(values)
                out[name] = found
        return out

    @staticmethod
    def _looked_up(column: Column, value: Any) -> Any:
        """``value`` as ``column`` stores it, looked up (:meth:`_converted_key`'s rules);
        ``_NOWHERE`` when no row can have it."""
        if column.convert is not None:
            if value is not None and type(value) not in column.exact:
                try:
                    value = column.convert(value)
                except UnstorableLength as exc:
                    value = exc.text  # longer than its column: its text matches no row
                except UnstorableNowhere:
                    return _NOWHERE  # no row of the column can hold it
                except UnstorableWide as exc:
                    if column.bounds is not None:
                        return _NOWHERE  # past any integer the column keeps: no row
                    column.unstorable(value, exc)
                except Unstorable as exc:
                    column.unstorable(value, exc)
        elif type(value) is not int:
            try:
                value = plain(value)  # a numpy integer, an IntEnum member: its int
            except Unstorable as exc:
                column.unstorable(value, exc)
        bounds = column.bounds
        if bounds is not None and type(value) is int:
            if not bounds.low <= value <= bounds.high:
                return _NOWHERE
        return value

    def _converted_key(self, key: tuple[Any, ...], lookup: bool = False) -> tuple[Any, ...] | None:
        if self.keys is None:
            return key
        out = []
        for value, column in zip(key, self.keys, strict=True):
            if column is not None and column.convert is not None:
                if value is not None and type(value) not in column.exact:
                    try:
                        value = column.convert(value)
                    except UnstorableLength as exc:
                        if not lookup:
                            column.unstorable(value, exc)
                        value = exc.text  # its text matches no row
                    except UnstorableWide as exc:
                        if lookup and column.bounds is not None:
                            return None  # past any integer the column keeps: no row
                        column.unstorable(value, exc)
                    except UnstorableNowhere as exc:
                        if lookup:
                            return None  # no row of the column can hold it
                        column.unstorable(value, exc)
                    except Unstorable as exc:
                        column.unstorable(value, exc)
                value = same_nan(value)
            out.append(value)
        return tuple(out)


_FLOAT_NAN = float("nan")
_DECIMAL_NAN = Decimal("NaN")


def same_nan(value: Any) -> Any:
    """``value``, or for a NaN key (``float``, or ``Decimal('NaN')``) one NaN object: a dict
    finds a NaN key by identity only (NaN equals nothing), so the row a batch wrote with a
    NaN key was not found by ``get`` with another NaN, as a later batch finds it (PostgreSQL
    orders NaN equal to NaN)."""
    kind = type(value)
    if kind is float:
        return _FLOAT_NAN if value != value else value
    if kind is Decimal and value.is_qnan() and not value.is_signed():
        return _DECIMAL_NAN
    return value


def _compile(columns: tuple[Column, ...]) -> Callable[[dict[str, Any], Any], None]:
    """``normalize(row, given)`` for these columns, its names closure cells (fast to load).
    It refuses an integer out of a column's bounds before converting (and, where the
    column converts a ``Decimal`` or text into one, after): ``row`` may be converted in
    part then, so a caller passes a copy it can drop."""
    names: dict[str, Any] = {
        "_MISSING": _MISSING,
        "_type": type,
        "_int": int,
        "_list": list,
        "_str": str,
        "_Unstorable": Unstorable,
    }
    body = ["    def normalize(row, given):", "        get = given.get"]
    for i, (name, convert, exact, bounds, unwritable, unstorable, nul) in enumerate(columns):
        nul = nul if convert is not None else None
        skipped = str if nul is not None else None  # a str takes the NUL test instead
        own = [kind for kind in exact if kind is not _NONE and kind is not skipped]
        tests = []  # the value's type first: one of the column's own ends the tests
        for j, kind in enumerate(own):
            names[f"kind{i}_{j}"] = kind
            tests.append(f"kind is not kind{i}_{j}")
        tests.append("value is not _MISSING")
        if _NONE in exact:
            tests.append("value is not None")
        body.append(f"        value = get({name!r}, _MISSING)")
        if bounds is not None or own or nul is not None:
            body.append("        kind = _type(value)")
        out_of_bounds = f"(value > high{i} or value < low{i})"
        if bounds is not None:
            names |= {f"low{i}": bounds.low, f"high{i}": bounds.high, f"refuse{i}": bounds.refuse}
            body.append(f"        if kind is _int and {out_of_bounds}:")
            body.append(f"            refuse{i}(value)")
            if bounds.items:
                names[f"items{i}"] = bounds.check_items
                body.append("        elif kind is _list:")
                body.append(f"            items{i}(value)")
        if convert is not None:
            names[f"convert{i}"] = convert
            names[f"unstorable{i}"] = unstorable
            otherwise = ""
            if nul is not None:  # a plain str pays one more test, in C
                names[f"nul{i}"] = nul
                body.append("        if kind is _str:")
                body.append("            if '\\x00' in value:")
                body.append(f"                unstorable{i}(value, nul{i})")
                otherwise = "el"
            body.append(f"        {otherwise}if {' and '.join(tests)}:")
            body.append("            try:")
            body.append(f"                value = convert{i}(value)")
            body.append("            except _Unstorable as exc:")
            body.append(f"                unstorable{i}(value, exc)")
            if unwritable is not None:
                names[f"unwritable{i}"] = unwritable
                body.append("            except TypeError as exc:")
                body.append(f"                unwritable{i}(exc)")
            body.append(f"            row[{name!r}] = value")
            if bounds is not None and bounds.converted:
                body.append(f"            if _type(value) is _int and {out_of_bounds}:")
                body.append(f"                refuse{i}(value)")
    source = "\n".join([f"def make({', '.join(names)}):", *body, "    return normalize"])
    scope: dict[str, Any] = {}
    exec(source, scope)  # noqa: S102 - code built from the table's column names (repr'd)
    return scope["make"](**names)  # type: ignore[no-any-return]


_MISSING = object()
_NOWHERE: Any = object()  # a value looked up that no row has
_converters: dict[tuple[str, sa.Table, tzinfo | None], Converters] = {}


def stored_values(dialect: Dialect, table: sa.Table, zone: tzinfo | None = None) -> Converters:
    """The converters of ``table``'s columns whose values the database converts (computed
    once per dialect, table and session time zone ``zone``, PostgreSQL's ``TimeZone``; empty
    for a table that needs none, or another dialect)."""
    key = (dialect.name, table, zone)
    found = _converters.get(key)
    if found is None:
        context = _Context(dialect, table, zone)
        columns: dict[str, Column] = {}
        keys_by_name: dict[str, Column] = {}  # a key's converter lets a list by: its own error
        rowid = _sqlite_rowid(dialect, table)
        for column in table.columns:
            column_type, decorators = undecorated(dialect, _dialect_type(dialect, column))
            converter = _converter(context, column_type)
            if decorators:
                converter = decorated(converter, decorators, dialect)
            if converter is not None and column is rowid:
                converter = sqlite_rowid(converter[0]), converter[1]
            bounds = integer_bounds(dialect, table, column)
            if converter is not None or bounds is not None:
                convert, exact = converter or (None, frozenset())
                json = isinstance(column.type, sa.JSON) and convert is not None
                unwritable = json_refusal(table, column) if json else None
                unstorable = value_refusal(table, column)
                nul = None
                if str in exact and dialect.name == "postgresql":
                    nul = pg_nul_refusal(column_type)
                keys_by_name[column.name] = Column(
                    column.name, convert, exact, bounds, unwritable, unstorable, nul
                )
                if convert is not None and isinstance(column_type, SCALAR_TYPES) and not decorators:
                    sql = column_type.compile(dialect=dialect).upper()
                    convert = no_container(convert, sql)
                columns[column.name] = Column(
                    column.name, convert, exact, bounds, unwritable, unstorable, nul
                )
        pk = table.primary_key.columns
        keys = tuple(
            keyed(keys_by_name.get(column.name), _compared(dialect, column)) for column in pk
        )
        found = _converters[key] = Converters(tuple(columns.values()), keys)
    return found


class _Context:
    """What a column's converter depends on besides its type."""

    def __init__(self, dialect: Dialect, table: sa.Table, zone: tzinfo | None) -> None:
        self.dialect = dialect
        self.zone = zone or UTC


def normalize(converters: Converters, row: dict[str, Any], given: Any) -> None:
    """Convert, in place, the values of ``row`` whose columns ``given`` (a mapping) names."""
    converters.normalize(row, given)


def _converter(
    context: _Context, column_type: sa.types.TypeEngine[Any]
) -> tuple[Converter, frozenset[type]] | None:
    dialect = context.dialect
    if dialect.name == "postgresql":
        if isinstance(column_type, sa.ARRAY):  # its elements as its item type converts one
            return pg_array(dialect, column_type, lambda item: _pg_any(context, item))
        found = postgresql_number(dialect, column_type)
        if found is None:
            found = postgresql_other(context.dialect, column_type, context.zone)
    elif dialect.name == "sqlite":
        found = sqlite_number(dialect, column_type)
        if found is None:
            found = sqlite_other(dialect, column_type, sqlite_integer)
    else:
        return None
    return found


def _sqlite_rowid(dialect: Dialect, table: sa.Table) -> sa.Column[Any] | None:
    """The column SQLite makes ``table``'s rowid: its only primary key column, declared
    ``INTEGER`` (not ``BIGINT``), in a table with a rowid."""
    if dialect.name != "sqlite" or len(table.primary_key.columns) != 1:
        return None
    if table.dialect_options["sqlite"].get("with_rowid") is False:
        return None
    (column,) = table.primary_key.columns
    declared = _stored_type(dialect, column).compile(dialect=dialect)
    return column if declared.strip().upper() == "INTEGER" else None


# Key types whose equal values (one dict key) have one form once converted: integers, text
# (CHAR(n) padded), UUIDs, dates, booleans, bytes, intervals, a NUMERIC with a scale.
_ONE_FORM = (sa.Integer, sa.String, sa.Uuid, sa.Date, sa.Boolean, sa.LargeBinary, sa.Interval)


def key_forms(dialect: Dialect, table: sa.Table) -> tuple[str, ...] | None:
    """``table``'s primary key column names when a key column may hold equal values in
    distinct forms, which one dict key merges and the database stores as the row's first
    (a ``NUMERIC``'s ``2.5`` and ``2.50``, a float's ``0.0`` and ``-0.0``, a ``citext``'s
    ``'Ab'`` and ``'aB'``: an upsert's
    ``ON CONFLICT`` keeps the stored key); ``None`` when each key column's equal values have
    one form."""
    columns = table.primary_key.columns
    if all(
        _one_form(_stored_type(dialect, column))
        and _compared(dialect, column) not in ("folded", "trimmed")
        for column in columns
    ):
        return None
    return tuple(column.name for column in columns)


def key_equality(dialect: Dialect, table: sa.Table) -> tuple[str | None, ...]:
    """Per primary key column of ``table``, how the database finds its keys equal where
    Python does otherwise (:mod:`projections.sql_key_equality`): ``"timetz"``, ``"folded"``,
    ``"trimmed"`` or ``None``."""
    return tuple(_compared(dialect, column) for column in table.primary_key.columns)


def _compared(dialect: Dialect, column: sa.Column[Any]) -> str | None:
    return compared(dialect.name, _stored_type(dialect, column))


def _one_form(column_type: sa.types.TypeEngine[Any]) -> bool:
    if isinstance(column_type, sa.Numeric):  # a NUMERIC(p, s) rounds to s places
        return not isinstance(column_type, sa.Float) and column_type.scale is not None
    return isinstance(column_type, _ONE_FORM)


def _dialect_type(dialect: Dialect, column: sa.Column[Any]) -> sa.types.TypeEngine[Any]:
    """``column``'s type on ``dialect`` (that of ``with_variant(type, dialect)``)."""
    variants = getattr(column.type, "_variant_mapping", None)
    if variants and dialect.name in variants:
        return variants[dialect.name]  # type: ignore[no-any-return]
    return column.type


def _stored_type(dialect: Dialect, column: sa.Column[Any]) -> sa.types.TypeEngine[Any]:
    """The type ``column`` is stored and compared as: a projection's own decorator's impl."""
    return undecorated(dialect, _dialect_type(dialect, column))[0]


def _pg_any(context: _Context, column_type: sa.types.TypeEngine[Any]) -> Found:
    found = postgresql_number(context.dialect, column_type)
    return found or postgresql_other(context.dialect, column_type, context.zone)
