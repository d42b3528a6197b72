"""PostgreSQL's reading of interval text (``interval_in``, ``IntervalStyle`` ``postgres``).

Used by :mod:`projections.sql_interval_values`; written after PostgreSQL's
``ParseDateTime``, ``DecodeInterval`` and ``DecodeISO8601Interval`` (``datetime.c``) and
checked against PostgreSQL 15 on some 3,000 texts. The fields are read right to left, a
number taking the unit on its right; fractions carry down as PostgreSQL carries them (a
fraction of a year rounded to months, of a month 30 days, of a day microseconds); a time
``H:MM[:SS[.f]]`` (or ``M:SS.f``), a number before a time is days, a bare number seconds,
``'Y-M'`` years and months, ``'@'`` ignored, a final ``'ago'`` negates; or ISO 8601 with
designators. Refused (:class:`UnreadInterval`) besides what PostgreSQL refuses: forms
PostgreSQL versions read otherwise (``'ago'`` before the end, a bare number or ``H:M``
where the column has fields) and ISO 8601's alternative format.
"""

from __future__ import annotations

import re

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


class UnreadInterval(Exception):  # noqa: N818 - a refusal's reason, shown by the caller
    """Text ``interval_in`` refuses (or reads otherwise on another version)."""


def parsed(text: str, fields: str | None = None) -> tuple[int, int, int]:
    """``(months, days, microseconds)`` of an interval text, as PostgreSQL reads it."""
    try:
        return _decoded(_tokens(text), fields)
    except UnreadInterval:
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
        raise UnreadInterval("PostgreSQL reads no such interval")
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
                raise UnreadInterval("PostgreSQL reads no such interval")
        elif c.isprintable():  # other punctuation separates fields
            pass
        else:
            raise UnreadInterval("PostgreSQL reads no such interval")
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
        raise UnreadInterval("a field of it is out of range")
    return value


def _int64(value: int) -> int:
    if not -_INT64 <= value < _INT64:
        raise UnreadInterval("a field of it is out of range")
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
                    raise UnreadInterval(
                        "PostgreSQL versions read a number without unit otherwise here"
                    )
                unit = "second"
            used = _number(itm, field, unit)
            if used == {"month"}:
                unit = "month"  # also after 'Y-M', whatever the unit was
            elif unit == "hour":
                unit = "day"
            pending = False
        else:
            if pending:
                raise UnreadInterval("PostgreSQL reads no two units in a row")
            name = _UNITS.get(field[:10])
            if name is None:
                raise UnreadInterval("it names a unit PostgreSQL reads in no interval")
            if name == "ago":
                if index != len(tokens) - 1:
                    raise UnreadInterval(
                        "'ago' is read only at the end (PostgreSQL versions differ)"
                    )
                before, unit = True, "ago"
                continue
            unit, pending = name, True
            continue
        if seen & used:
            raise UnreadInterval("it gives a unit twice")
        seen |= used
    if not seen:
        raise UnreadInterval("PostgreSQL reads no interval in it")
    if pending:
        raise UnreadInterval("a unit has no number")
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
        raise UnreadInterval("PostgreSQL reads no such time in an interval")
    hours, minutes, short_fraction, seconds, fraction = found.groups()
    hour, minute, second = int(hours), int(minutes), int(seconds or 0)
    micro = 0
    if short_fraction is not None:  # M:SS.f
        micro = _fraction_micros(short_fraction)
        hour, minute, second = 0, hour, minute
    elif seconds is None and fields == "MINUTE TO SECOND":
        raise UnreadInterval("PostgreSQL versions read H:M otherwise in a MINUTE TO SECOND column")
    elif fraction is not None:
        micro = _fraction_micros(fraction)
    if minute > 59 or second > 60 or micro > _US_SECOND:
        raise UnreadInterval("a field of it is out of range")
    return _int64(hour * _US_HOUR + minute * _US_MINUTE + second * _US_SECOND + micro)


def _fraction_micros(fraction: str) -> int:
    return round(float(fraction) * _US_SECOND) if fraction != "." else 0


def _number(itm: _Fields, field: str, unit: str) -> set[str]:
    """Add ``field`` (a number, maybe signed, fractional or ``Y-M``) in ``unit`` to ``itm``;
    the units it fills."""
    found = re.fullmatch(r"([+-]?\d*)(?:-(\d+)|(\.\d*))?", field, re.ASCII)
    if found is None or not found.group(1).lstrip("+-") and found.group(3) is None:
        raise UnreadInterval("PostgreSQL reads no such number in an interval")
    whole_text, months_text, fraction_text = found.groups()
    whole = _int64(int(whole_text)) if whole_text.lstrip("+-") else 0
    negative = field.startswith("-")
    if months_text is not None:  # SQL's 'years-months'
        extra = int(months_text)
        if extra >= 12:
            raise UnreadInterval("a field of it is out of range")
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
        raise UnreadInterval("PostgreSQL reads no such unit after a number in an interval")
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
        raise UnreadInterval("PostgreSQL reads no such interval")
    while i < n:
        if text[i] == "T":
            date_part = False
            i += 1
            continue
        found = _ISO_NUMBER.match(text, i)
        if found is None:
            raise UnreadInterval("PostgreSQL reads no such interval")
        number = float(found.group())
        if not -1e15 <= number <= 1e15:
            raise UnreadInterval("a field of it is out of range")
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
            raise UnreadInterval("PostgreSQL reads no such ISO 8601 interval (designators only)")
    return _int32(itm.years * 12 + itm.months), itm.days, itm.micros
