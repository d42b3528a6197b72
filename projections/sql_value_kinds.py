"""Values of a type PostgreSQL casts to no number column: a date, a datetime, a time, an
interval (``timedelta``), bytes. psycopg sends each as its own type (``date``, ``timestamp``,
``bytea``...), which PostgreSQL refuses at the flush (``cannot cast type timestamp[] to
integer[]``), failing the whole batch, or in a lookup, aborting the transaction. The number
converters of :mod:`projections.sql_number_values` refuse them at the upsert instead, naming
the column (:class:`~projections.api.UnstorableValueError`).

SQLite stores a date, a datetime or bytes in an integer column (text or a BLOB, read alike in
and after the batch), but sqlite3 binds no ``time`` or ``timedelta``, and SQLAlchemy binds a
``NUMERIC``/``FLOAT`` column's value through ``float()``: what either fails is refused too.

An ``Enum`` member of no number or text type (``IntEnum`` and ``StrEnum`` members are their
plain value: :mod:`projections.sql_plain_values`): psycopg sends its name, which no
PostgreSQL number column reads, and sqlite3 binds none; both failed the flush. A
``LargeBinary`` (``bytea``, ``BLOB``) column takes bytes only: psycopg and SQLAlchemy's bind
processor failed the flush on any other value (:func:`binary_value`)."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from datetime import date, time, timedelta
from decimal import Decimal
from typing import Any, NoReturn
from uuid import UUID

import sqlalchemy as sa

from projections.sql_limits import Unstorable

__all__ = [
    "SCALAR_TYPES",
    "SQLITE_ENUM",
    "binary_value",
    "no_container",
    "no_number",
    "sqlite_float_kind",
    "sqlite_no_float",
    "sqlite_unbound",
]

_NOT_NUMBERS = (date, time, timedelta, bytes, bytearray, memoryview, UUID)


SCALAR_TYPES = (sa.Float, sa.Numeric, sa.Integer, sa.DateTime, sa.Date, sa.Time, sa.Interval)
"""Column types whose converters :func:`no_container` guards: one value each, never a list."""
_CONTAINERS = (list, tuple, dict, set, frozenset)


def no_container(convert: Callable[[Any], Any], column_type: str) -> Callable[[Any], Any]:
    """``convert``, refusing a list, tuple, dict or set first. Left to the flush, each failed
    or was stored by the shape of the batch: ``[5]`` as 5 in an integer column (the upsert's
    arrays are unnested, and flattened with them), ``(moment,)`` as its moment, two items as
    a NULL key ("violates not-null constraint" on another column), or a type error."""

    def refusing(value: Any) -> Any:
        if isinstance(value, _CONTAINERS):
            kind = type(value).__name__
            raise Unstorable(
                f"a {kind} is not one value (the column is {column_type}; an ARRAY or a JSON "
                "column keeps one)"
            )
        return convert(value)

    return refusing


def no_number(value: Any) -> Any:
    """``value`` (one a number converter does not know, left to the flush) unless PostgreSQL
    casts no value of its type to a number: then refused."""
    if isinstance(value, _NOT_NUMBERS):
        kind = type(value).__name__
        raise Unstorable(f"PostgreSQL casts no {kind} to a number column (write a number)")
    if isinstance(value, enum.Enum):
        raise Unstorable(_ENUM_NAME)
    return value


_ENUM_NAME = (
    "psycopg sends an Enum member as its name, which PostgreSQL reads as no number: write "
    "its value (or use an IntEnum)"
)
SQLITE_ENUM = "sqlite3 binds no Enum member: write its value or its name"


_UNBOUND = (time, timedelta, UUID)


def sqlite_unbound(value: Any) -> Any:
    """``value`` as sqlite3 binds it where no affinity converts it: a ``bytearray`` or
    ``memoryview`` as the BLOB read back (``bytes``); a ``time``, ``timedelta`` or ``UUID``,
    which sqlite3 binds not (it fails the flush), refused."""
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, _UNBOUND):
        kind = type(value).__name__
        raise Unstorable(f"sqlite3 binds no {kind}: write a number (or its text to a text column)")
    if isinstance(value, enum.Enum):
        raise Unstorable(SQLITE_ENUM)
    return value


def sqlite_no_float(value: Any) -> NoReturn:
    """Refuse ``value``, which ``float()`` reads no number from: SQLAlchemy binds a float to
    a SQLite ``NUMERIC``/``FLOAT`` column, and its ``float()`` of it fails the flush."""
    kind = type(value).__name__
    raise Unstorable(
        f"SQLAlchemy binds a float to this column, and Python reads none from a {kind}"
    )


_BYTES = (bytes, bytearray, memoryview)


def sqlite_float_kind(value: Any, real: bool) -> None:
    """Refuse, for a SQLite float (``real``) or ``NUMERIC`` column, what PostgreSQL refuses
    and SQLAlchemy's ``float()`` would change: bytes (``float(b"12")`` is 12.0; others failed
    the flush), a finite ``Decimal`` past a double's range (bound as infinity) or, for a float
    column, so small it is bound as zero ("out of range for type double precision")."""
    if isinstance(value, _BYTES):
        kind = type(value).__name__
        raise Unstorable(
            f"PostgreSQL casts no {kind} to a number column (SQLAlchemy's float() read the "
            "digits of some): write a number"
        )
    if isinstance(value, Decimal) and value.is_finite() and value:
        number = float(value)
        if math.isinf(number) or (real and not number):
            raise Unstorable(
                "a SQLite float or NUMERIC column stores a double (SQLAlchemy binds one), and "
                "it is out of range for type double precision: write it as text"
            )


def binary_value(value: Any) -> bytes:
    """A ``LargeBinary`` (``bytea``, ``BLOB``) column's value: bytes, a ``bytearray`` or
    ``memoryview`` as the bytes read back; any other value is refused (text too: psycopg and
    SQLAlchemy's bind processor failed the flush on it, whatever its content)."""
    if isinstance(value, _BYTES):
        return bytes(value)
    kind = type(value).__name__
    raise Unstorable(f"a binary column takes bytes only, no {kind} (write .encode() of text)")
