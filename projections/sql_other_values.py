"""Values of text, boolean, datetime and JSON columns as a store keeps them.

The companion of :mod:`projections.sql_number_values` for the other column types: what a
later batch reads back of a value a handler wrote, observed on PostgreSQL (through psycopg,
in the session's time zone) and SQLite (through SQLAlchemy's processors), and checked by
``tests/test_batch_values.py``:

- Text (PostgreSQL): a number, boolean, ``Decimal``, date, datetime, time or ``timedelta``
  is stored as the server prints it (``float8out``'s shortest digits, ``true``, a timestamp
  in the session's time zone, :mod:`projections.pg_clock_text`). SQLite: as its TEXT
  affinity stores what the driver binds (``CAST AS TEXT``); a time or ``timedelta``, which
  sqlite3 binds not, as PostgreSQL's text.
- Booleans, on both stores and both write paths: ``0``/``1`` (and ``0.0``/``1.0``) become
  ``False``/``True`` as SQLAlchemy's statements bind them, and so do the strings
  PostgreSQL's ``boolin`` takes (``'true'``, ``' t '``, ``'off'``, ``'y'``...); any other
  value is refused naming the column (it was refused only at the flush, so a later write
  of the row in the same batch hid it).
- PostgreSQL ``timestamptz``, ``timestamp``, ``date``: :mod:`projections.sql_time_values`.
  SQLite: SQLAlchemy's processors (the stored text read back: naive, offset and ``fold``
  dropped).
- JSON: the value as the dialect's serializer writes it and its deserializer reads it (a
  tuple becomes a list, an int key a string); ``JSONB`` also orders keys as PostgreSQL does
  (shorter first) and reads numbers back as ``numeric`` prints them (``1e16`` an int).
  SQLite's ``JSON`` (like ``DATETIME``) column has NUMERIC affinity: the JSON of a number
  is stored as the number (``1.0`` as the integer 1).

PostgreSQL text: :mod:`projections.sql_pg_text_values`; JSON: :mod:`projections.sql_json_values`.
Sized text (``VARCHAR(n)``, ``CHAR(n)``), enums, text UUIDs and arrays:
:mod:`projections.sql_text_values`; times of day: :mod:`projections.sql_clock_values`;
intervals: :mod:`projections.sql_interval_values`.

A NUL character is refused for PostgreSQL text (psycopg refuses it) and in a string or key
of a ``JSONB`` value (``\\u0000``); a plain ``str`` is checked inline by the compiled
``normalize`` (:func:`pg_nul_refusal`), other text by the converters.

PostgreSQL dates and times: :mod:`projections.sql_time_values`. A tuple, list, dict or bytes
for a PostgreSQL text column is refused (psycopg sends it as a record, an array, bytea: one
statement stored its text form, another failed), a set for any text column (no driver binds
one), NaN for a SQLite one (stored as NULL). A
value a converter does not know is left as it is: the flush stores or refuses it.
"""

from __future__ import annotations

import enum
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

from outbox.json_numbers import UnwritableIntegerError
from projections.pg_clock_text import clock_text
from projections.sql_clock_values import pg_time, sqlite_processed
from projections.sql_interval_values import pg_interval
from projections.sql_json_values import _NUL_JSONB, _json
from projections.sql_limits import Unstorable
from projections.sql_pg_text_values import _pg_text
from projections.sql_plain_values import plain
from projections.sql_text_values import NUL_TEXT, enum_value, sized_text, uuid_text
from projections.sql_time_values import pg_date, pg_timestamp, pg_timestamptz
from projections.sql_value_kinds import SQLITE_ENUM, binary_value

Converter = Callable[[Any], Any]

_NONE = type(None)
_INT64 = 2**63
SQLITE_NAN = "SQLite stores NaN as NULL; write None, or text"


# -- PostgreSQL ------------------------------------------------------------------------


def postgresql_other(
    dialect: Dialect, column_type: sa.types.TypeEngine[Any], zone: tzinfo
) -> tuple[Converter, frozenset[type]] | None:
    """The converter of a PostgreSQL text, boolean, datetime or JSON column, with the value
    types that need none."""
    if isinstance(column_type, sa.ARRAY):
        return None  # sql_values: each element as its item type's column converts it
    if isinstance(column_type, sa.Enum):
        return enum_value(dialect, column_type)
    if isinstance(column_type, sa.LargeBinary):
        return binary_value, frozenset({bytes, _NONE})
    if isinstance(column_type, sa.Uuid):
        return uuid_value(column_type) or uuid_text(_to_uuid)
    if isinstance(column_type, sa.JSON):
        binary = isinstance(column_type.dialect_impl(dialect), postgresql.JSONB)
        return _json(dialect, binary), frozenset({str, bool, int, _NONE})
    if isinstance(column_type, sa.String):
        text = _pg_text(zone)
        return sized_text(dialect, column_type, text) or (text, frozenset({str, _NONE}))
    if isinstance(column_type, sa.Time):
        return pg_time(dialect, column_type, zone)
    if isinstance(column_type, sa.Interval | postgresql.INTERVAL):
        return pg_interval(dialect, column_type)
    if isinstance(column_type, sa.Boolean):
        return boolean, frozenset({bool, _NONE})
    if isinstance(column_type, sa.DateTime):
        if column_type.timezone:
            return pg_timestamptz(zone), frozenset({_NONE})
        return pg_timestamp(zone), frozenset({_NONE})
    if isinstance(column_type, sa.Date):
        return pg_date(zone), frozenset({_NONE})
    return None


def pg_nul_refusal(column_type: sa.types.TypeEngine[Any]) -> Unstorable | None:
    """Why a PostgreSQL column of ``column_type`` refuses a plain ``str`` holding a NUL
    (``None``: it does not, or its converter sees every ``str``): text (psycopg refuses it),
    ``JSONB`` (\\u0000 in a string or key); ``JSON`` keeps the escape as it is written."""
    if isinstance(column_type, sa.JSON):
        return Unstorable(_NUL_JSONB) if isinstance(column_type, postgresql.JSONB) else None
    if isinstance(column_type, sa.String) and not isinstance(column_type, sa.Enum):
        return Unstorable(NUL_TEXT)
    return None


# uuid_in: 32 hex digits in any case, a hyphen allowed after each group of four, in braces
# or not.
_UUID_TEXT = re.compile(r"(\{)?[0-9a-f]{4}(?:-?[0-9a-f]{4}){7}(?(1)\})", re.ASCII | re.I)
_NO_UUID = "a Uuid column takes a uuid.UUID or text PostgreSQL reads as one"


def uuid_value(column_type: sa.Uuid[Any]) -> tuple[Converter, frozenset[type]] | None:
    """A ``Uuid`` column (``as_uuid``, the default): text PostgreSQL's ``uuid_in`` reads
    becomes the ``uuid.UUID`` read back (a row upserted with ``id=str(u)`` is found by
    ``get(table, u)``); anything else is refused (refused at the flush, on SQLite by an
    ``AttributeError``)."""
    if not column_type.as_uuid:
        return None

    def convert(value: Any) -> Any:
        if type(value) is str and _UUID_TEXT.fullmatch(value):
            return uuid.UUID(value.strip("{}").replace("-", ""))
        if isinstance(value, uuid.UUID):
            return value
        raise Unstorable(_NO_UUID)

    return convert, frozenset({uuid.UUID, _NONE})


def _to_uuid(value: Any) -> uuid.UUID:
    """What a ``Uuid`` column (``as_uuid``) stores of ``value``; a text one stores its text."""
    return uuid_value(_UUID)[0](value)  # type: ignore[index,no-any-return]


_UUID = sa.Uuid()


def _boolin() -> dict[str, bool]:
    """The strings PostgreSQL's ``boolin`` takes (any case, trimmed), each a prefix."""
    words = {"true": True, "false": False, "yes": True, "no": False}
    accepted = {word[:n]: truth for word, truth in words.items() for n in range(1, len(word) + 1)}
    return {**accepted, "on": True, "of": False, "off": False, "1": True, "0": False}


_BOOLIN = _boolin()
_NO_BOOLEAN = (
    "a boolean column takes True or False, 0 or 1, or a text PostgreSQL reads as a boolean "
    "('t', 'yes', 'off', '0'...)"
)


def boolean(value: Any) -> bool:
    """A boolean column's value, alike on both stores and both write paths: a text
    ``boolin`` reads (``'true'``, ``' t '``, ``'off'``...) and a number equal to 0 or 1 (as
    SQLAlchemy's ``Boolean`` binds it; psycopg would send an integer as ``smallint``, which
    PostgreSQL refuses for a boolean column) become ``False``/``True``; anything else is
    refused, where SQLAlchemy's statements, psycopg or the server refused it at the flush."""
    kind = type(value)
    if kind is str:
        found = _BOOLIN.get(value.strip(" \t\n\r\v\f").lower())
        if found is not None:
            return found
    elif kind is int or kind is float or kind is Decimal:
        try:
            if value == 0 or value == 1:
                return value == 1
        except ArithmeticError:  # a signalling NaN
            pass
    raise Unstorable(_NO_BOOLEAN)


# -- SQLite ----------------------------------------------------------------------------


def sqlite_other(
    dialect: Dialect, column_type: sa.types.TypeEngine[Any], numeric: Converter
) -> tuple[Converter, frozenset[type]] | None:
    """The converter of a SQLite text, boolean, datetime or JSON column (SQLAlchemy's
    processors, the column's affinity), with the value types that need none. ``numeric``:
    what NUMERIC affinity (that of ``DATETIME`` and ``JSON`` columns) stores of a text."""
    if isinstance(column_type, sa.Enum):
        return enum_value(dialect, column_type)
    if isinstance(column_type, sa.LargeBinary):
        return binary_value, frozenset({bytes, _NONE})
    if isinstance(column_type, sa.Uuid):
        return uuid_value(column_type) or uuid_text(_to_uuid)
    if isinstance(column_type, sa.String):
        return sqlite_text, frozenset({str, bytes, _NONE})
    if isinstance(column_type, sa.Time | sa.Interval):
        return sqlite_processed(dialect, column_type)
    if isinstance(column_type, sa.Boolean):
        return boolean, frozenset({bool, _NONE})
    if isinstance(column_type, sa.DateTime | sa.Date | sa.JSON):
        impl = column_type.dialect_impl(dialect)
        bind = impl.bind_processor(dialect)
        result = impl.result_processor(dialect, None)
        if bind is None or result is None:
            return None
        naive = isinstance(column_type, sa.DateTime) and not column_type.timezone
        return _processed(bind, numeric, result, naive), frozenset({_NONE})
    return None


def _processed(
    bind: Converter, stored: Converter, result: Converter, naive_datetimes: bool
) -> Converter:
    """What SQLAlchemy binds, as the column stores it (JSON ``1.0`` as the integer 1), read
    back by its result processor."""

    def convert(value: Any) -> Any:
        if naive_datetimes and type(value) is datetime and value.tzinfo is None:
            return value.replace(fold=0) if value.fold else value  # fold is not stored
        try:
            bound = bind(value)
        except UnwritableIntegerError:
            raise  # refused naming the column
        except (TypeError, ValueError) as exc:  # the flush would fail alike
            other = plain(value)  # a numpy.datetime64: the datetime it stands for
            if other is not value:
                return convert(other)
            # Its type only: a bind processor's message may quote the value (never shown).
            why = f"SQLAlchemy binds no such value here ({type(exc).__name__})"
            raise Unstorable(why) from None
        try:
            return result(stored(bound))
        except Exception:
            return value  # the flush refuses it

    return convert


_local = threading.local()
_SQLITE_UNBOUND = frozenset({tuple, list, dict, set, frozenset, uuid.UUID})


def sqlite_text(value: Any) -> Any:
    """TEXT affinity: what the driver binds (a number, a date through sqlite3's adapters)
    stored as text, as SQLite itself converts it."""
    kind = type(value)
    if kind is int or kind is bool:
        return str(int(value)) if -_INT64 <= value < _INT64 else value
    if kind is float and value != value:
        raise Unstorable(SQLITE_NAN)
    if isinstance(value, time | timedelta):
        return clock_text(value)  # sqlite3 binds neither: the text PostgreSQL stores
    if kind is Decimal or kind in _SQLITE_UNBOUND:
        raise Unstorable(f"sqlite3 binds no {kind.__name__}: write str() of it")
    if kind is float or kind is datetime or kind is date:
        connection = getattr(_local, "sqlite", None)
        if connection is None:
            connection = _local.sqlite = sqlite3.connect(":memory:")
        try:
            (text,) = connection.execute("SELECT CAST(? AS TEXT)", (value,)).fetchone()
        except (sqlite3.Error, OverflowError):
            return value
        return text if type(text) is str else value
    if isinstance(value, str):
        return str.__str__(value)  # a str subclass (a StrEnum member): its plain text
    if isinstance(value, bytearray | memoryview):
        return bytes(value)  # sqlite3 binds it as a BLOB, read back as bytes
    other = plain(value)
    if other is value and isinstance(value, enum.Enum):
        raise Unstorable(SQLITE_ENUM)
    return value if other is value else sqlite_text(other)
