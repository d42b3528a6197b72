"""Values of subclasses and foreign number types as the plain values a database returns.

A driver sends an ``IntEnum`` member as its integer, a ``Decimal``, ``float``, ``datetime``,
``date`` or ``str`` subclass (a ``(str, Enum)`` member, ``numpy.str_``) as its base type, a
numpy scalar as its number or ``bool`` (psycopg's numpy dumpers; sqlite3 binds an
``int``/``float`` subclass as the number, and a numpy integer or ``numpy.bool_`` as the bytes
of a BLOB unless converted): a later batch reads the plain value back. The converters of
:mod:`projections.sql_number_values`, :mod:`projections.sql_other_values` and
:mod:`projections.sql_time_values` give a value of a type they do not know to :func:`plain`
and convert what it returns, so a handler reads the same in its batch. A ``numpy.datetime64``
(which psycopg cannot adapt, and sqlite3 binds as a BLOB) is the naive ``datetime`` it stands
for, or refused when none holds it exactly.
"""

from __future__ import annotations

import numbers
import operator
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from projections.sql_limits import Unstorable

__all__ = ["ODD_NAN", "SIGNALLING_NAN", "odd_nan", "plain"]

SIGNALLING_NAN = "a signalling NaN (Decimal('sNaN')) is no value a database stores: write NaN"
ODD_NAN = (
    "PostgreSQL reads no NaN with a sign or a payload (psycopg sends Decimal('-NaN') as "
    "'-NaN', which it refuses): write Decimal('NaN')"
)


def odd_nan(value: Decimal) -> bool:
    """Whether ``value`` is a quiet NaN PostgreSQL refuses as psycopg sends it (its text,
    ``-NaN``, ``NaN12``): any but ``Decimal('NaN')`` itself. Not a signalling NaN, which
    psycopg sends as ``NaN`` (refused as :data:`SIGNALLING_NAN` all the same)."""
    return value.is_qnan() and (value.is_signed() or bool(value.as_tuple().digits))


_PLAIN = frozenset({int, float, Decimal, datetime, date, bool, str, type(None)})


def plain(value: Any) -> Any:
    """``value`` as the plain ``int``, ``float``, ``Decimal``, ``datetime``, ``date``, ``str``
    or ``bool`` it stands for (a subclass's, a numpy scalar's, a ``numpy.datetime64``'s naive
    ``datetime``); any other value itself (one of those types too): a converter calls it again
    on a new value only. :class:`Unstorable` for a ``numpy.datetime64`` no ``datetime`` holds
    exactly (``NaT``, nanoseconds, a year outside 1-9999)."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, str):
        return str.__str__(value)  # its text, as the drivers send it (not an Enum's str())
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Decimal):
        return Decimal(value)
    if isinstance(value, datetime):
        return datetime(
            *(value.year, value.month, value.day, value.hour, value.minute, value.second),
            value.microsecond,
            value.tzinfo,
            fold=value.fold,
        )
    if isinstance(value, date):
        return date(value.year, value.month, value.day)
    if type(value).__module__ != "numpy":
        return value  # a Fraction, an mpz...: no driver sends it as a number
    if type(value).__name__ == "datetime64":
        return _moment(value)
    if type(value).__name__ in ("bool", "bool_"):  # numpy.bool_: psycopg sends a boolean
        return bool(value)
    if isinstance(value, numbers.Integral):  # numpy integers
        try:
            return operator.index(value)
        except TypeError:
            return value
    if isinstance(value, numbers.Real):  # numpy floats not of ``float``
        try:
            return float(value)
        except (TypeError, ValueError):
            return value
    return value


def _moment(value: Any) -> datetime:
    """A ``numpy.datetime64`` as the naive ``datetime`` it stands for (psycopg cannot adapt
    one; sqlite3 binds its bytes as a BLOB), if one holds it exactly."""
    year = value.astype("datetime64[Y]").astype("int64") + 1970  # NaT: the lowest int64
    if 1 <= year <= 9999:  # microseconds of such a year fit in an int64, whatever the unit
        moment = value.astype("datetime64[us]")
        if moment == value:
            return moment.item()  # type: ignore[no-any-return]
    raise Unstorable(
        "no datetime holds it exactly (a NaT, or finer than microseconds, or a year outside "
        "1-9999): write a datetime"
    )
