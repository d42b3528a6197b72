"""Values of PostgreSQL ``interval`` columns as psycopg reads them back.

A companion of :mod:`projections.sql_time_values`, checked against the server by
``tests/test_batch_clock_values.py``. PostgreSQL keeps months, days and microseconds apart;
psycopg reads them back as one ``timedelta``, a month as 30 days and a year as 365:

- A ``timedelta`` is stored as its days and its time of day; a naive ``datetime.time`` as
  the time since midnight (``time`` to ``interval``).
- Text as PostgreSQL's ``interval_in`` reads it (``IntervalStyle`` ``postgres``): numbers with
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

import re
from collections.abc import Callable
from datetime import time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from projections.sql_limits import Unstorable

Converter = Callable[[Any], Any]
Found = tuple[Converter, frozenset[type]] | None

_NONE = type(None)
_ADVICE = "write a timedelta, or interval text such as '1 day 02:00:00' or '3 hours'"
_US_SECOND, _US_MINUTE, _US_HOUR, _US_DAY = 1_000_000, 60_000_000, 3_600_000_000, 86_400_000_000
_INT32 = 2**31
_INT64 = 2**63

# PostgreSQL's interval units (deltatktbl), looked up by their first 10 characters.
_UNITS = {
    **dict.fromkeys(["c", "cent", "centuries", "century"], "century"),
    **dict.fromkeys(["d", "day", "days"], "day"),
    **dict.fromkeys(["dec", "decade", "decades", "decs"], "decade"),
    **dict.fromkeys(["h", "hour", "hours", "hr", "hrs"], "hour"),
    **dict.fromkeys(["m", "min", "mins", "minute", "minutes"], "minute"),
    **dict.fromkeys(["microsecon", "us", "usec", "useconds", "usecs"], "microsecond"),
    **dict.fromkeys(["mil", "millennia", "millennium", "mils"], "millennium"),
    **dict.fromkeys(
        ["millisecon", "ms", "msec", "msecs", "mseconds", "millisecond"], "millisecond"
    ),
    **dict.fromkeys(["mon", "mons", "month", "months"], "month"),
    **dict.fromkeys(["s", "sec", "second", "seconds", "secs"], "second"),
    **dict.fromkeys(["w", "week", "weeks"], "week"),
    **dict.fromkeys(["y", "year", "years", "yr", "yrs"], "year"),
    "ago": "ago",
    # Units PostgreSQL knows but reads no number in (a 'Y-M' number before one takes none).
    **dict.fromkeys(["qtr", "quarter", "timezone", "timezone_h", "timezone_m"], "other"),
}
# Words of PostgreSQL's date table: one followed by a digit does not start a zone name.
_DATE_WORDS = frozenset(
    "ad allballs am apr april at aug august bc d dec december dow doy dst epoch feb february "
    "fri friday h infinity isodow isoyear j jan january jd jul julian july jun june m mar march "
    "may mm mon monday nov november now oct october on pm s sat saturday sep sept september "
    "sun sunday t thu thur thurs thursday today tomorrow tue tues tuesday wed wednesday weds "
    "y yesterday".split()
)
_SECONDS_UNITS = frozenset({"second", "millisecond", "microsecond"})
_TIME_UNITS = _SECONDS_UNITS | {"hour", "minute"}
_MICROS = {"microsecond": 1, "millisecond": 1000, "second": _US_SECOND}
_MICROS |= {"minute": _US_MINUTE, "hour": _US_HOUR}
_YEARS = {"year": 1, "decade": 10, "century": 100, "millennium": 1000}
# Fields: how the column's typmod cuts a value.
_CUT_ALL = ("YEAR",)
_CUT_DAYS = ("MONTH", "YEAR TO MONTH")
_CUT_TIME = ("DAY",)
_CUT_HOURS = ("HOUR", "DAY TO HOUR")
_CUT_MINUTES = ("MINUTE", "DAY TO MINUTE", "HOUR TO MINUTE")


class _Bad(Exception):
    """Text ``interval_in`` refuses (or reads otherwise on another version)."""


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
            except _Bad as exc:
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
                    f"an INTERVAL {fields} column would keep {read_back(*again)} of the "
                    f"{found} psycopg reads back of it; {_ADVICE}"
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


def parsed(text: str, fields: str | None = None) -> tuple[int, int, int]:
    """``(months, days, microseconds)`` of an interval text, as PostgreSQL reads it."""
    try:
        return _decoded(_tokens(text), fields)
    except _Bad:
        if text.startswith("P"):
            return _iso(text)
        raise


# -- PostgreSQL's format -------------------------------------------------------------------

_NUMBER, _DATE, _TIME, _STRING, _SIGNED = "number", "date", "time", "string", "signed"


def _digit(c: str) -> bool:
    return "0" <= c <= "9"


def _alpha(c: str) -> bool:
    return "a" <= c <= "z" or "A" <= c <= "Z"


def _tokens(text: str) -> list[tuple[str, str]]:
    """The fields of ``text``, as PostgreSQL's ``ParseDateTime`` splits it."""
    out = []
    i, n = 0, len(text)
    if not text.isascii():
        raise _Bad("PostgreSQL reads no such interval")
    while i < n:
        c = text[i]
        if c in " \t\n\r\v\f":
            i += 1
            continue
        j = i + 1
        if _digit(c):
            while j < n and _digit(text[j]):
                j += 1
            kind = _NUMBER
            if j < n and text[j] == ":":
                kind = _TIME
                while j < n and (_digit(text[j]) or text[j] in ":."):
                    j += 1
            elif j < n and text[j] in "-/.":
                delim = text[j]
                j += 1
                if j < n and _digit(text[j]):
                    kind = _NUMBER if delim == "." else _DATE
                    while j < n and _digit(text[j]):
                        j += 1
                    if j < n and text[j] == delim:
                        kind = _DATE
                        while j < n and (_digit(text[j]) or text[j] == delim):
                            j += 1
                else:
                    kind = _DATE
                    while j < n and (text[j].isalnum() or text[j] == delim):
                        j += 1
            out.append((kind, text[i:j].lower()))
        elif c == ".":
            while j < n and _digit(text[j]):
                j += 1
            out.append((_NUMBER, text[i:j]))
        elif _alpha(c):
            while j < n and _alpha(text[j]):
                j += 1
            word = text[i:j].lower()
            kind = _STRING
            if j < n and (
                text[j] in "-/."
                or ((text[j] == "+" or _digit(text[j])) and word not in _DATE_WORDS)
            ):
                kind = _DATE
                while j < n and (text[j] in "+-/_.:" or text[j].isalnum()):
                    j += 1
            out.append((kind, text[i:j].lower()))
        elif c in "+-":
            k = j
            while k < n and text[k] in " \t\n\r\v\f":
                k += 1
            if k < n and _digit(text[k]):
                j = k + 1
                while j < n and (_digit(text[j]) or text[j] in ":.-"):
                    j += 1
                out.append((_SIGNED, c + text[k:j]))
            elif k < n and _alpha(text[k]):
                j = k + 1
                while j < n and _alpha(text[j]):
                    j += 1
                out.append((_STRING, c + text[k:j].lower()))
            else:
                raise _Bad("PostgreSQL reads no such interval")
        elif c.isprintable():  # other punctuation separates fields
            pass
        else:
            raise _Bad("PostgreSQL reads no such interval")
        i = j
    return out


class _Fields:
    """PostgreSQL's ``pg_itm_in``: years, months, days (32 bits), microseconds (64)."""

    def __init__(self) -> None:
        self.years = self.months = self.days = self.micros = 0

    def add_micros(self, whole: int, fraction: float, scale: int) -> None:
        self.micros = _int64(self.micros + _int64(whole * scale))
        self.add_fraction_micros(fraction, scale)

    def add_fraction_micros(self, fraction: float, scale: int) -> None:
        if fraction == 0:
            return
        scaled = fraction * scale
        micros = int(scaled)
        rest = scaled - micros
        if rest > 0.5:
            micros += 1
        elif rest < -0.5:
            micros -= 1
        self.micros = _int64(self.micros + micros)

    def add_days(self, whole: int, scale: int) -> None:
        self.days = _int32(self.days + _int32(_int32(whole) * scale))

    def add_fraction_days(self, fraction: float, scale: int) -> None:
        if fraction == 0:
            return
        scaled = fraction * scale
        extra = int(scaled)
        self.days = _int32(self.days + extra)
        self.add_fraction_micros(scaled - extra, _US_DAY)

    def add_years(self, whole: int, fraction: float, scale: int) -> None:
        self.years = _int32(self.years + _int32(_int32(whole) * scale))
        self.months = _int32(self.months + int(round(fraction * scale * 12)))


def _int32(value: int) -> int:
    if not -_INT32 <= value < _INT32:
        raise _Bad("a field of it is out of range")
    return value


def _int64(value: int) -> int:
    if not -_INT64 <= value < _INT64:
        raise _Bad("a field of it is out of range")
    return value


def _decoded(tokens: list[tuple[str, str]], fields: str | None) -> tuple[int, int, int]:
    """PostgreSQL's ``DecodeInterval``: the fields read right to left, a number taking the
    unit on its right."""
    itm = _Fields()
    seen: set[str] = set()
    unit: str | None = None  # the unit of the next number (None: none given)
    pending = False  # a unit read, its number not yet
    before = False
    for index in range(len(tokens) - 1, -1, -1):
        kind, field = tokens[index]
        if kind == _TIME or (kind == _SIGNED and ":" in field):
            micros = _interval_time(field.lstrip("+-"), fields)
            itm.micros = -micros if field.startswith("-") else micros
            used, unit, pending = _TIME_UNITS, "day", False
        elif kind in (_NUMBER, _DATE, _SIGNED):
            if unit is None:
                if fields is not None:
                    raise _Bad("PostgreSQL versions read a number without unit otherwise here")
                unit = "second"
            used = _number(itm, field, unit)
            if used == {"month"}:
                unit = "month"  # also after 'Y-M', whatever the unit was
            elif unit == "hour":
                unit = "day"
            pending = False
        else:
            if pending:
                raise _Bad("PostgreSQL reads no two units in a row")
            name = _UNITS.get(field[:10])
            if name is None:
                raise _Bad(f"PostgreSQL reads no unit {field!r} in an interval")
            if name == "ago":
                if index != len(tokens) - 1:
                    raise _Bad("'ago' is read only at the end (PostgreSQL versions differ)")
                before, unit = True, "ago"
                continue
            unit, pending = name, True
            continue
        if seen & used:
            raise _Bad("it gives a unit twice")
        seen |= used
    if not seen:
        raise _Bad("PostgreSQL reads no interval in it")
    if pending:
        raise _Bad("a unit has no number")
    months = _int32(itm.years * 12 + itm.months)
    days, micros = itm.days, itm.micros
    if before:
        months, days, micros = -months, -days, -micros
    return months, days, micros


_INTERVAL_TIME = re.compile(r"(\d+):(\d+)(?:(\.\d*)|:(\d+)(\.\d*)?)?", re.ASCII)


def _interval_time(field: str, fields: str | None) -> int:
    """Microseconds of ``H:MM[:SS[.f]]`` or ``M:SS.f`` (``DecodeTimeForInterval``)."""
    found = _INTERVAL_TIME.fullmatch(field)
    if found is None:
        raise _Bad("PostgreSQL reads no such time in an interval")
    hours, minutes, short_fraction, seconds, fraction = found.groups()
    hour, minute, second = int(hours), int(minutes), int(seconds or 0)
    micro = 0
    if short_fraction is not None:  # M:SS.f
        micro = _fraction_micros(short_fraction)
        hour, minute, second = 0, hour, minute
    elif seconds is None and fields == "MINUTE TO SECOND":
        raise _Bad("PostgreSQL versions read H:M otherwise in a MINUTE TO SECOND column")
    elif fraction is not None:
        micro = _fraction_micros(fraction)
    if minute > 59 or second > 60 or micro > _US_SECOND:
        raise _Bad("a field of it is out of range")
    return _int64(hour * _US_HOUR + minute * _US_MINUTE + second * _US_SECOND + micro)


def _fraction_micros(fraction: str) -> int:
    return round(float(fraction) * _US_SECOND) if fraction != "." else 0


def _number(itm: _Fields, field: str, unit: str) -> set[str]:
    """Add ``field`` (a number, maybe signed, fractional or ``Y-M``) in ``unit`` to ``itm``;
    the units it fills."""
    found = re.fullmatch(r"([+-]?\d*)(?:-(\d+)|(\.\d*))?", field, re.ASCII)
    if found is None or not found.group(1).lstrip("+-") and found.group(3) is None:
        raise _Bad("PostgreSQL reads no such number in an interval")
    whole_text, months_text, fraction_text = found.groups()
    whole = _int64(int(whole_text)) if whole_text.lstrip("+-") else 0
    negative = field.startswith("-")
    if months_text is not None:  # SQL's 'years-months'
        extra = int(months_text)
        if extra >= 12:
            raise _Bad("a field of it is out of range")
        itm.months = _int32(itm.months + _int32(whole * 12 + (-extra if negative else extra)))
        return {"month"}
    fraction = float(fraction_text) if fraction_text not in (None, ".") else 0.0
    if negative:
        fraction = -fraction
    if unit in _MICROS:
        itm.add_micros(whole, fraction, _MICROS[unit])
        if unit == "second" and fraction != 0:
            return set(_SECONDS_UNITS)
        return {unit}
    if unit == "day":
        itm.add_days(whole, 1)
        itm.add_fraction_micros(fraction, _US_DAY)
    elif unit == "week":
        itm.add_days(whole, 7)
        itm.add_fraction_days(fraction, 7)
    elif unit == "month":
        itm.months = _int32(itm.months + _int32(whole))
        itm.add_fraction_days(fraction, 30)
    elif unit in _YEARS:
        itm.add_years(whole, fraction, _YEARS[unit])
    else:  # 'ago' or a unit of no interval field right after a number
        raise _Bad("PostgreSQL reads no such unit after a number in an interval")
    return {unit}


# -- ISO 8601 ------------------------------------------------------------------------------

_ISO_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def _iso(text: str) -> tuple[int, int, int]:
    """ISO 8601 with designators (``DecodeISO8601Interval``); its alternative format
    (``P0001-02-03``) is refused."""
    itm = _Fields()
    date_part = True
    i, n = 1, len(text)
    if n < 2:
        raise _Bad("PostgreSQL reads no such interval")
    while i < n:
        if text[i] == "T":
            date_part = False
            i += 1
            continue
        found = _ISO_NUMBER.match(text, i)
        if found is None:
            raise _Bad("PostgreSQL reads no such interval")
        number = float(found.group())
        if not -1e15 <= number <= 1e15:
            raise _Bad("a field of it is out of range")
        whole = int(number)  # towards zero
        fraction = number - whole
        i = found.end()
        designator = text[i] if i < n else ""
        i += 1
        if date_part and designator == "Y":
            itm.add_years(whole, fraction, 1)
        elif date_part and designator == "M":
            itm.months = _int32(itm.months + _int32(whole))
            itm.add_fraction_days(fraction, 30)
        elif date_part and designator == "W":
            itm.add_days(whole, 7)
            itm.add_fraction_days(fraction, 7)
        elif date_part and designator == "D":
            itm.add_days(whole, 1)
            itm.add_fraction_micros(fraction, _US_DAY)
        elif not date_part and designator in ("H", "M", "S"):
            scale = {"H": _US_HOUR, "M": _US_MINUTE, "S": _US_SECOND}[designator]
            itm.add_micros(whole, fraction, scale)
        else:
            raise _Bad("PostgreSQL reads no such ISO 8601 interval (designators only)")
    return _int32(itm.years * 12 + itm.months), itm.days, itm.micros
