"""Integers a column cannot keep, refused when the handler writes them, naming the column.

Payloads carry integers exactly, whatever their size (``outbox/json_numbers.py``). Where the
database would refuse one without naming the column (PostgreSQL's "integer out of range"),
or keep another value without a word (SQLite's NUMERIC keeps a double), ``SqlTx.upsert``
refuses it first with :class:`WideIntegerError`, naming ``table.column`` and the value's type
(never the value: a refusal's message is logged and kept as its parked event's reason), and
before the row joins the batch: a handler that catches it may write something else.

- PostgreSQL ``SMALLINT`` / ``INTEGER`` / ``BIGINT``: 16, 32, 64 bits; checked as given and
  as converted (a ``Decimal``, a string of digits), and in an ``ARRAY`` of them.
- Floats (both databases): the nearest double (``REAL`` on PostgreSQL: single) is kept, as
  for any integer past 2**53; one past that range is refused.
- SQLite, any other column: 64 bits (its integers; a ``NUMERIC`` would keep a double, the
  driver binds no larger integer). A JSON object or array holds one, as text.
- JSON (both): an integer of more digits than Python writes as text (and reads back).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from outbox.json_numbers import UnwritableIntegerError
from projections.api import UnstorableValueError, WideIntegerError

_DOUBLE = 2**1024 - 2**970  # the least integer float() refuses (rounds past the largest)
_SINGLE = 2**128 - 2**103
_PG_INTEGERS = {"SMALLINT": 16, "INTEGER": 32, "BIGINT": 64}


@dataclass(frozen=True, slots=True)
class Bounds:
    """The integers ``low..high`` a column keeps; ``refuse`` raises for one it does not.
    ``converted``: checked again after the column's conversion (PostgreSQL reads a
    ``Decimal`` or a string of digits as an integer); ``items``: the column is an array of
    such integers."""

    low: int
    high: int
    refuse: Callable[..., NoReturn]
    converted: bool = False
    items: bool = False

    def check_items(self, value: list[Any], where: str = "") -> None:
        """Refuse the first integer of array ``value`` (nested lists too) out of bounds."""
        for index, item in enumerate(value):
            if type(item) is int and not self.low <= item <= self.high:
                self.refuse(item, f"{where}[{index}]")
            elif type(item) is list:
                self.check_items(item, f"{where}[{index}]")


def integer_bounds(dialect: Dialect, table: sa.Table, column: sa.Column[Any]) -> Bounds | None:
    """The integers ``column`` keeps, when the database would not keep every one exactly
    (or name the column refusing one); ``None`` when it would."""
    column_type = column.type
    where = f"{table.name}.{column.name}"
    if dialect.name == "postgresql":
        items = isinstance(column_type, sa.ARRAY)
        if items:
            column_type = column_type.item_type  # type: ignore[attr-defined]
        if isinstance(column_type, sa.Float):
            if items:
                return None
            sql = column_type.compile(dialect=dialect).upper()
            precision = column_type.precision
            if sql == "REAL" or (sql.startswith("FLOAT(") and precision and precision <= 24):
                return _floats(where, "a REAL column holds single-precision floats", _SINGLE)
            return _floats(where, "a float column holds doubles", _DOUBLE)
        if isinstance(column_type, sa.Integer):
            sql = column_type.compile(dialect=dialect).upper()
            bits = _PG_INTEGERS.get(sql, 64)
            wider = "a NUMERIC column" if bits == 64 else "a BIGINT or NUMERIC column"
            why = f"{'an' if sql == 'INTEGER' else 'a'} {sql} column holds {bits}-bit integers"
            if items:
                why = f"an array of {sql} holds {bits}-bit integers"
            bound = 2 ** (bits - 1)
            refuse = _refusal(where, f"{why} ({wider} holds it exactly)")
            return Bounds(-bound, bound - 1, refuse, converted=True, items=items)
        return None
    if dialect.name == "sqlite":
        if isinstance(column_type, sa.Float):
            return _floats(where, "a float column holds doubles", _DOUBLE)
        why = (
            "SQLite keeps 64-bit integers (a NUMERIC column would keep a double): write it "
            "as text, or inside a JSON object or array"
        )
        # An INTEGER column converts a Decimal into an integer, checked again.
        converted = isinstance(column_type, sa.Integer)
        return Bounds(-(2**63), 2**63 - 1, _refusal(where, why), converted=converted)
    return None


def _floats(where: str, why: str, past: int) -> Bounds:
    return Bounds(-past + 1, past - 1, _refusal(where, f"{why}, and it is past their range"))


def type_name(value: Any) -> str:
    """The name of ``value``'s type, shown by a refusal in place of the value (which may be a
    secret): ``int``, ``decimal.Decimal``, ``numpy.float64``..."""
    kind = type(value)
    module = kind.__module__.split(".")[0]
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def refused_message(where: str, value: Any, why: str) -> str:
    """A refusal's message: ``where`` (``table.column``), the type of ``value`` and ``why``,
    never the value nor its repr (a password written to a column of the wrong type would be
    logged and kept in its parked event's reason)."""
    return f"{where} cannot hold a value of type {type_name(value)}: {why}"


def _refusal(where: str, why: str) -> Callable[..., NoReturn]:
    def refuse(value: int, item: str = "") -> NoReturn:
        raise WideIntegerError(refused_message(f"{where}{item}", value, why))

    return refuse


def json_refusal(table: sa.Table, column: sa.Column[Any]) -> Callable[[Exception], NoReturn]:
    """What refuses, naming the column, a JSON value holding an integer of more digits than
    Python writes as text (:class:`UnwritableIntegerError`, from the column's converter)."""
    where = f"{table.name}.{column.name}"

    def refuse(error: Exception) -> NoReturn:
        if not isinstance(error, UnwritableIntegerError):
            raise error
        raise WideIntegerError(
            f"{where} cannot hold a JSON value holding an integer of more than "
            f"{sys.get_int_max_str_digits()} digits: JSON text of it is not read back (Python "
            "reads no longer integer): write it as text"
        ) from None

    return refuse


class Unstorable(Exception):  # noqa: N818 - a signal from a converter, not an error shown
    """Raised by a column's converter for a value the column cannot keep as written; the
    upsert turns it into :class:`UnstorableValueError` naming the column. ``why``: the
    reason, and what to write instead."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class UnstorableWide(Unstorable):
    """An integer no column of the kind holds, found before it was written out (refused as
    :class:`WideIntegerError`)."""


class UnstorableLength(Unstorable):
    """Text longer than its column: refused when written; a key looked up that is longer
    than its column matches no row (it is looked up as ``text``, the text the column would
    compare: a value of another type, ``True`` or a date, looked up as given, made
    PostgreSQL refuse the query, ``operator does not exist: character varying = boolean``,
    aborting the transaction)."""

    def __init__(self, why: str, text: str) -> None:
        super().__init__(why)
        self.text = text


class UnstorableNowhere(Unstorable):
    """A value no row of its column can hold (a SQLite rowid's text): refused when written;
    a key or ``find`` value looked up, no row has it (as for a number past its bounds)."""


def value_refusal(table: sa.Table, column: sa.Column[Any]) -> Callable[[Any, Unstorable], NoReturn]:
    """What refuses, naming the column, a value its converter found unstorable."""
    where = f"{table.name}.{column.name}"

    def refuse(value: Any, error: Unstorable) -> NoReturn:
        kind = WideIntegerError if isinstance(error, UnstorableWide) else UnstorableValueError
        raise kind(refused_message(where, value, error.why)) from None

    return refuse
