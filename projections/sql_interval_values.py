"""Values of PostgreSQL ``interval`` columns as psycopg reads them back.

A companion of :mod:`projections.sql_time_values`, checked against the server by
``tests/test_batch_clock_values.py``. PostgreSQL keeps months, days and microseconds apart;
psycopg reads them back as one ``timedelta``, a month as 30 days and a year as 365:

- A ``timedelta`` is stored as its days and its time of day; a naive ``datetime.time`` as
  the time since midnight (``time`` to ``interval``).
- Text as PostgreSQL's ``interval_in`` reads it (:mod:`projections.pg_interval_text`;
  ``IntervalStyle`` ``postgres``): numbers with
  units (``'1 day'``, ``'1.5 hours'``, ``'2 mons'``, ``'1h 30m'``; fractions carried down as
  PostgreSQL does: ``'0.7 years'`` is 8 months), ``[-]H:MM[:SS[.ffffff]]`` (or ``M:SS.f``), a
  day count before a time (``'1 01:00'``), a bare number of seconds, ``'Y-M'``, ``'@'`` and
  a final ``'ago'``, and ISO 8601 with designators (``'P1Y2M3DT4H5M6.5S'``).
- The column's fields and precision (``INTERVAL DAY TO MINUTE``, ``Interval(second_precision=
  0)``) cut and round the value as PostgreSQL does (half away from zero).
- Refused: other text (``'infinity'``, units given twice, unknown words); an interval whose
  days, once months are 30 days and years 365, pass ``timedelta``'s range (psycopg cannot
  read it back, or wraps it around 32 bits and reads another: ``'11767033 years'`` read
  ``-251 days``); forms another PostgreSQL version reads otherwise (``'ago'`` not at the end,
  a bare number or ``H:M`` in a column with fields); numbers, dates and other values
  (PostgreSQL casts none to an interval).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from projections.pg_interval_text import UnreadInterval, parsed
from projections.sql_limits import Unstorable

Converter = Callable[[Any], Any]
Found = tuple[Converter, frozenset[type]] | None

_NONE = type(None)
_ADVICE = "write a timedelta, or interval text such as '1 day 02:00:00' or '3 hours'"
_US_SECOND, _US_MINUTE, _US_HOUR = 1_000_000, 60_000_000, 3_600_000_000
_INT64 = 2**63
# Fields: how the column's typmod cuts a value.
_CUT_ALL = ("YEAR",)
_CUT_DAYS = ("MONTH", "YEAR TO MONTH")
_CUT_TIME = ("DAY",)
_CUT_HOURS = ("HOUR", "DAY TO HOUR")
_CUT_MINUTES = ("MINUTE", "DAY TO MINUTE", "HOUR TO MINUTE")


def pg_interval(dialect: Dialect, column_type: sa.types.TypeEngine[Any]) -> Found:
    """The converter of a PostgreSQL ``INTERVAL`` column."""
    impl = column_type.dialect_impl(dialect)
    precision = getattr(impl, "precision", None)
    fields = (getattr(impl, "fields", None) or "").strip().upper() or None

    def convert(value: Any) -> timedelta:
        kind = type(value)
        if kind is timedelta:
            months, days, micros = 0, value.days, value.seconds * _US_SECOND + value.microseconds
        elif kind is time and value.tzinfo is None:
            months, days = 0, 0
            micros = (value.hour * 60 + value.minute) * _US_MINUTE + value.second * _US_SECOND
            micros += value.microsecond
        elif kind is str:
            try:
                months, days, micros = parsed(value, fields)
            except UnreadInterval as exc:
                raise Unstorable(f"{exc}; {_ADVICE}") from None
        else:
            raise Unstorable(f"PostgreSQL casts no {kind.__name__} to an interval; {_ADVICE}")
        months, days, micros = _typmod(months, days, micros, fields, precision)
        found = read_back(months, days, micros)
        if fields is not None and kind is not timedelta:
            # What is written is the timedelta read back: the column must keep it as it is.
            written = found.seconds * _US_SECOND + found.microseconds
            again = _typmod(0, found.days, written, fields, precision)
            if read_back(*again) != found:
                raise Unstorable(
                    f"an INTERVAL {fields} column would keep less of it than the timedelta "
                    f"psycopg reads back; {_ADVICE}"
                )
        return found

    return convert, frozenset({_NONE})


def read_back(months: int, days: int, micros: int) -> timedelta:
    """What psycopg reads of an interval: a year (12 months) 365 days, a month 30."""
    years = abs(months) // 12 * (1 if months >= 0 else -1)
    rest = months - years * 12
    try:
        return timedelta(days=365 * years + 30 * rest + days, microseconds=micros)
    except OverflowError:
        raise Unstorable(
            "PostgreSQL stores it, but psycopg cannot read it back (with a month as 30 days "
            f"and a year as 365, it is past {timedelta.max.days} days); {_ADVICE}"
        ) from None


def _typmod(
    months: int, days: int, micros: int, fields: str | None, precision: int | None
) -> tuple[int, int, int]:
    """The value as a column of these fields and precision keeps it."""
    if fields in _CUT_ALL:
        months, days, micros = _truncated(months, 12), 0, 0
    elif fields in _CUT_DAYS:
        days, micros = 0, 0
    elif fields in _CUT_TIME:
        micros = 0
    elif fields in _CUT_HOURS:
        micros = _truncated(micros, _US_HOUR)
    elif fields in _CUT_MINUTES:
        micros = _truncated(micros, _US_MINUTE)
    if precision is not None and 0 <= precision < 6:
        scale = 10 ** (6 - precision)
        magnitude = (abs(micros) + scale // 2) // scale * scale
        if magnitude >= _INT64:
            raise Unstorable(f"PostgreSQL rounds it past its range (and wraps it); {_ADVICE}")
        micros = magnitude if micros >= 0 else -magnitude
    return months, days, micros


def _truncated(value: int, unit: int) -> int:
    whole = abs(value) // unit * unit
    return whole if value >= 0 else -whole
