"""Values of time-of-day columns as a store keeps them (and SQLite's ``Time``/``Interval``).

A companion of :mod:`projections.sql_time_values` (dates and timestamps), observed on
PostgreSQL through psycopg and checked by ``tests/test_batch_clock_values.py``:

- ``TIME``: a ``datetime.time`` (an aware one's wall time, its offset dropped), a
  datetime's time (an aware one's in the session's time zone), a ``timedelta``'s time of
  day (``interval`` to ``time``: days dropped), or text: ``HH:MM[:SS[.ffffff]]`` (seconds
  rounded to microseconds half to even; ``:60`` is the next minute), optionally after
  ``T`` or a date and a blank, followed by ``AM``/``PM`` and an offset (``+02``,
  ``-05:30``, ``Z``) or an abbreviation of a fixed offset (``PST``), which a ``TIME`` column
  ignores; ``'allballs'`` is midnight UTC. Rounded to the column's precision.
- ``TIME WITH TIME ZONE``: the same, keeping the offset (``Z``: UTC); a value without one
  takes the session time zone's offset: at the date written, when one is; else only in a
  zone of one offset (in ``Europe/Paris`` PostgreSQL takes the offset of the day the
  transaction runs, which a replay would not repeat: refused); at a date's wall time that
  happens twice, the later offset (:func:`~projections.sql_time_values.pg_wall_time`). A
  naive datetime or a ``timedelta`` is refused (PostgreSQL casts neither into it).
- Refused: ``24:00:00`` (also rounded to it: psycopg cannot read it back), ``'now'`` (a
  replay would store another time), an offset of 16 hours or more, a ``ZoneInfo`` time
  (psycopg cannot send it without a date), abbreviations whose offset PostgreSQL takes from
  a zone's history (``MSK``), zone names, other text formats, numbers and other values.

SQLite (``Time`` and ``Interval``): as SQLAlchemy's processors store and read it (an aware
time's offset dropped; an ``Interval`` as the datetime 1970-01-01 plus it); other values,
and intervals past year 9999, are refused (they failed at the flush).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from projections.pg_abbreviations import DYNAMIC, FIXED
from projections.sql_limits import Unstorable
from projections.sql_time_values import pg_wall_time

Converter = Callable[[Any], Any]
Found = tuple[Converter, frozenset[type]] | None

_NONE = type(None)
_DAY = 86_400_000_000  # microseconds
_ADVICE = "write a datetime.time, or text HH:MM[:SS[.ffffff]] with an optional offset"
_TEXT = re.compile(
    r"\s*(?:T|(\d{4}-\d{2}-\d{2})\s+)?"
    r"(?:(\d{1,2}):(\d{1,2})(?::(\d{1,2})(\.\d*)?)?|(\d\d)(\d\d)(?:(\d\d)(\.\d*)?)?)"
    r"\s*(?:(am|pm)(?=\s|$))?\s*(?:([+-])(\d{1,2})(?::?(\d{2})(?::?(\d{2}))?)?|([a-z]+))?\s*",
    re.ASCII | re.IGNORECASE,
)
_CLOCK = frozenset({"now", "today", "tomorrow", "yesterday"})
_LATEST = "PostgreSQL stores 24:00:00, but psycopg cannot read it back; " + _ADVICE
_DISPLACEMENT = 16 * 3600  # PostgreSQL takes offsets below 16 hours


def pg_time(dialect: Dialect, column_type: sa.Time, zone: tzinfo) -> Found:
    """The converter of a PostgreSQL ``TIME`` or ``TIME WITH TIME ZONE`` column in a session
    of time zone ``zone``."""
    precision = getattr(column_type, "precision", None)  # postgresql.TIME(precision=p)
    scale = 10 ** (6 - precision) if precision is not None and precision < 6 else 1
    with_zone = bool(column_type.timezone)
    fixed = zone.utcoffset(None)  # None for a zone whose offset changes

    def convert(value: Any) -> Any:
        kind = type(value)
        day: date | None = None
        if kind is str:
            micros, offset, day = _parsed(value)
        elif kind is time:
            micros = _micros(value)
            offset = None
            if value.tzinfo is not None:
                offset = value.utcoffset()
                if offset is None:
                    raise Unstorable(
                        "psycopg cannot send a time of a zone without a date (its offset "
                        f"changes): {_ADVICE}"
                    )
        elif kind is datetime:
            if value.tzinfo is None or value.utcoffset() is None:
                if with_zone:
                    raise Unstorable(f"PostgreSQL casts no naive datetime to it; {_ADVICE}")
                micros, offset = _micros(value.time()), None
            else:
                try:
                    local = value.astimezone(zone)
                except (OverflowError, ValueError):
                    raise Unstorable(
                        f"it is out of range in the session's zone; {_ADVICE}"
                    ) from None
                micros, offset = _micros(local.time()), local.utcoffset()
        elif kind is timedelta and not with_zone:
            micros, offset = (value.seconds * 1_000_000 + value.microseconds), None
        else:
            raise Unstorable(f"PostgreSQL casts no {kind.__name__} to a time; {_ADVICE}")
        if offset is not None and abs(offset.total_seconds()) >= _DISPLACEMENT:
            raise Unstorable(f"PostgreSQL takes no time zone offset of 16 hours or more; {_ADVICE}")
        if scale > 1:
            micros = (micros + scale // 2) // scale * scale  # rounded half up
        if micros >= _DAY:
            raise Unstorable(_LATEST)
        clock = _clock(micros)
        if not with_zone:
            return clock
        if offset is None:
            offset = _session_offset(zone, fixed, day, clock)
        return clock.replace(tzinfo=timezone(offset))

    return convert, frozenset({_NONE})


def _micros(value: time) -> int:
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond


def _clock(micros: int) -> time:
    seconds, micro = divmod(micros, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return time(hour, minute, second, micro)


def _session_offset(
    zone: tzinfo, fixed: timedelta | None, day: date | None, clock: time
) -> timedelta:
    if day is not None:
        offset = pg_wall_time(datetime.combine(day, clock), zone).utcoffset()
        if offset is not None:
            return offset
    if fixed is not None:
        return fixed
    raise Unstorable(
        "without an offset PostgreSQL takes the session time zone's offset on the day the "
        "transaction runs, which a replay would not repeat: write an offset (or a date)"
    )


def _parsed(text: str) -> tuple[int, timedelta | None, date | None]:
    """``(microseconds since midnight, offset or None, date or None)`` of a time text, as
    PostgreSQL reads it (refused: :class:`Unstorable`)."""
    word = text.strip().lower()
    if word == "allballs":
        return 0, timedelta(0), None
    if word in _CLOCK:
        raise Unstorable(
            f"it names the time the transaction runs, which a replay would not repeat; {_ADVICE}"
        )
    found = _TEXT.fullmatch(text)
    if found is None:
        raise Unstorable(f"PostgreSQL reads no such time, or reads it by its settings; {_ADVICE}")
    day_text, hour, minute, second, fraction = found.groups()[:5]
    meridiem, sign, off_h, off_m, off_s, name = found.groups()[9:]
    if hour is None:  # HHMM[SS[.f]], which PostgreSQL reads with no offset after it
        hour, minute, second, fraction = found.groups()[5:9]
        if meridiem or sign or name:
            raise Unstorable(f"PostgreSQL reads HHMM with no offset or AM/PM; {_ADVICE}")
    hours, minutes, seconds = int(hour), int(minute), int(second or 0)
    micro = round(float(fraction) * 1_000_000) if fraction and fraction != "." else 0
    if meridiem is not None:
        if hours > 12:
            raise Unstorable(f"an hour past 12 takes no AM or PM; {_ADVICE}")
        if meridiem.lower() == "am" and hours == 12:
            hours = 0
        elif meridiem.lower() == "pm" and hours != 12:
            hours += 12
    if (
        hours > 24
        or minutes > 59
        or seconds > 60
        or micro > 1_000_000
        or (hours == 24 and (minutes or seconds or micro))
    ):
        raise Unstorable(f"a field is out of range; {_ADVICE}")
    day = None
    if day_text is not None:
        try:
            day = date.fromisoformat(day_text)
        except ValueError:
            raise Unstorable(f"it is no valid date; {_ADVICE}") from None
    offset = None
    if sign is not None:
        if int(off_h) > 15:
            raise Unstorable(f"PostgreSQL takes no time zone offset of 16 hours or more; {_ADVICE}")
        if int(off_m or 0) > 59 or int(off_s or 0) > 59:
            raise Unstorable(f"the offset is out of range; {_ADVICE}")
        seconds_east = int(off_h) * 3600 + int(off_m or 0) * 60 + int(off_s or 0)
        offset = timedelta(seconds=-seconds_east if sign == "-" else seconds_east)
    elif name is not None:
        key = name.lower()
        if key in FIXED:
            offset = timedelta(seconds=FIXED[key])
        elif key in DYNAMIC:
            raise Unstorable(
                f"PostgreSQL takes the offset of {name!r} from a zone's history on the day the "
                f"transaction runs; {_ADVICE}"
            )
        else:
            raise Unstorable(f"PostgreSQL reads no time zone of the name it gives; {_ADVICE}")
    micros = ((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + micro
    return micros, offset, day


# -- SQLite (Time, Interval) -----------------------------------------------------------------


def sqlite_processed(dialect: Dialect, column_type: sa.types.TypeEngine[Any]) -> Found:
    """The converter of a SQLite ``Time`` or ``Interval`` column: what SQLAlchemy's bind
    processor stores, read back by its result processor; a value they refuse is refused
    (it failed at the flush)."""
    impl = column_type.dialect_impl(dialect)
    bind = impl.bind_processor(dialect)
    result = impl.result_processor(dialect, None)
    if bind is None or result is None:
        return None
    kind = "time" if isinstance(column_type, sa.Time) else "timedelta"
    why = f"SQLAlchemy stores a {kind} in this SQLite column"

    def convert(value: Any) -> Any:
        try:
            return result(bind(value))
        except OverflowError:
            raise Unstorable(f"{why}, as a datetime: this one is past year 9999") from None
        except (TypeError, ValueError, AttributeError):
            raise Unstorable(f"{why}, and no {type(value).__name__}") from None

    return convert, frozenset({_NONE})
