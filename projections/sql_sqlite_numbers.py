"""SQLite's number columns as a store keeps them: the converters
:mod:`projections.sql_values` gives them (PostgreSQL's: :mod:`projections.sql_number_values`,
whose docstring gives the rules both follow).

- ``NUMERIC``: a whole number of 64 bits (an ``int``, a ``Decimal``, text of digits) is bound
  as that integer and kept exactly (:mod:`outbox.sqlite_whole_numbers`: SQLAlchemy bound a
  float, so 2**53 + 1 was 2**53); any other value as a float, which NUMERIC affinity keeps
  as an integer when integral.
- Floats: SQLAlchemy binds a float (text as PostgreSQL's double precision reads it); REAL
  affinity keeps it a float. NaN is refused (SQLite stores it as NULL), bytes too.
- ``INTEGER``: an integral float, or a numeric string, becomes an integer; a ``Decimal``,
  which the driver cannot bind, an integer as on PostgreSQL (half away from zero).
"""

from __future__ import annotations

import math
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from outbox.sqlite_whole_numbers import SqliteWholeNumeric
from projections.sql_float_text import pg_float_text
from projections.sql_limits import Unstorable, UnstorableNowhere, UnstorableWide
from projections.sql_number_values import (
    INT64,
    NO_INTEGER,
    NONE,
    NUMBER,
    PG_INTEGER,
    decimal_integer,
    integer_text,
)
from projections.sql_other_values import SQLITE_NAN, Converter, sqlite_text
from projections.sql_plain_values import SIGNALLING_NAN, plain
from projections.sql_value_kinds import sqlite_float_kind, sqlite_no_float, sqlite_unbound

__all__ = ["sqlite_integer", "sqlite_number", "sqlite_rowid"]

_NOT_A_FLOAT = "SQLAlchemy binds a float to this column, and Python reads none from this text"


def sqlite_number(
    dialect: Dialect, column_type: sa.types.TypeEngine[Any]
) -> tuple[Converter, frozenset[type]] | None:
    if isinstance(column_type, sa.Numeric | sa.Float):  # SQLAlchemy binds a float
        # REAL affinity keeps floats; NUMERIC affinity stores an integral float as an integer.
        real = isinstance(column_type, sa.Float)
        impl = column_type.dialect_impl(dialect)
        if not real and not isinstance(impl, SqliteWholeNumeric):
            impl = column_type.adapt(SqliteWholeNumeric)  # as readmodel's engines bind it
        bind = impl.bind_processor(dialect) or float
        result = impl.result_processor(dialect, None)
        stored = _sqlite_real if real else _sqlite_integral
        if real:  # text as PostgreSQL's double precision reads it
            bind = _text_as_pg_float(bind)
        return _sqlite_bound(bind, stored, result, real), frozenset({NONE})
    if isinstance(column_type, sa.Integer):
        return _sqlite_integer_column, frozenset({int, NONE})
    return None


_ROWID = (
    "a SQLite INTEGER PRIMARY KEY is the table's rowid and takes integers only (SQLite "
    "refuses any other value: datatype mismatch): write an integer"
)


_CONTAINERS = (list, tuple, dict, set, frozenset)


def sqlite_rowid(convert: Converter) -> Converter:
    """``convert`` (an ``INTEGER`` column's) for the column SQLite makes the rowid (the only
    primary key column, declared ``INTEGER``): a value it stores as no integer (text, a
    float, a date, bytes) is refused, where SQLite refused it at the flush, failing the
    whole batch ("datatype mismatch"); looked up, no row has it. A list or dict is let by:
    a key given as one has its own error, and a value ``no_container`` refuses it first."""

    def rowid(value: Any) -> Any:
        stored = convert(value)
        if type(stored) is not int and not isinstance(stored, _CONTAINERS):
            raise UnstorableNowhere(_ROWID)
        return stored

    return rowid


def _sqlite_integer_column(value: Any) -> Any:
    """INTEGER affinity, and a ``Decimal`` (which the driver cannot bind) as PostgreSQL
    stores it: rounded half away from zero; NaN or infinity is refused."""
    if type(value) is not Decimal:
        if not isinstance(value, Decimal):
            return sqlite_integer(value)
        value = Decimal(value)
    if not value.is_finite():
        raise Unstorable(NO_INTEGER)
    return decimal_integer(value)


def _sqlite_bound(
    bind: Converter, stored: Converter, result: Converter | None, real: bool
) -> Converter:
    def convert(value: Any) -> Any:
        kind = type(value)
        if kind is not float and kind is not int and kind is not str:
            sqlite_float_kind(value, real)
        try:
            number = bind(value)
        except ValueError:
            if isinstance(value, str):  # SQLAlchemy's float() of it fails the flush
                raise Unstorable(_NOT_A_FLOAT) from None
            if isinstance(value, Decimal) and value.is_snan():
                raise Unstorable(SIGNALLING_NAN) from None
            return value
        except TypeError:
            sqlite_no_float(value)
        except OverflowError:
            return value  # the flush refuses it
        if type(number) is int:  # a whole number of 64 bits, kept exactly
            return number if result is None else result(number)
        if type(number) is not float:
            return value
        if number != number:
            raise Unstorable(SQLITE_NAN)
        number = stored(number)
        if result is None:
            return number
        number = result(number)
        # Written again, -0.0 is stored as the integer 0 (read back as 0.00, not -0.00).
        return number if number else number.copy_abs()

    return convert


def _text_as_pg_float(bind: Converter) -> Converter:
    def bound(value: Any) -> Any:
        return pg_float_text(value) if isinstance(value, str) else bind(value)

    return bound


def _sqlite_real(value: float) -> float:
    """REAL affinity stores an integral float as an integer: -0.0 is read back as 0.0."""
    return value if value else 0.0


def _sqlite_integral(value: float) -> float | int:
    if value.is_integer() and -INT64 <= value < INT64:
        return int(value)
    return value


def sqlite_integer(value: Any) -> Any:
    """INTEGER affinity: an integral float, or a string that reads as a number, is stored
    as a number (an integer when it is one)."""
    kind = type(value)
    if kind is float:
        if value != value:
            raise Unstorable(SQLITE_NAN)
        return _sqlite_integral(value) if math.isfinite(value) else value
    if kind is bool:
        return int(value)
    if kind is str and NUMBER.fullmatch(value):
        text = value.strip()
        if PG_INTEGER.fullmatch(text):
            try:
                number = integer_text(text)
            except UnstorableWide:
                number = float(text)  # stored as REAL, as a number past 64 bits
                if not math.isfinite(number):
                    raise
                return number
            return number if -INT64 <= number < INT64 else float(number)
        number = float(text)
        return _sqlite_integral(number) if math.isfinite(number) else number
    if kind is Decimal:
        if value.is_nan():
            raise Unstorable(SQLITE_NAN)
        return value
    if kind is datetime or kind is date:
        return sqlite_text(value)  # sqlite3 binds its ISO text, which no affinity reads
    other = plain(value)
    return sqlite_unbound(value) if other is value else sqlite_integer(other)
