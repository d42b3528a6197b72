"""The text PostgreSQL stores in a text column of a timestamp's, a time's or an interval's
value (its output functions: ``DateStyle`` ISO, ``IntervalStyle`` postgres, the defaults).

psycopg sends a ``datetime``, ``time`` or ``timedelta`` as its own type, which PostgreSQL
casts to text on assignment; sqlite3 binds no ``time`` or ``timedelta`` (the flush failed).
The text converters of :mod:`projections.sql_other_values` keep the text PostgreSQL stores
on both stores, so a handler reads the same in its batch as later, and one projection the
same on either store.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from projections.sql_limits import Unstorable

__all__ = ["clock_text", "offset_text", "timestamp_text"]

_DISPLACEMENT = 16 * 3600  # PostgreSQL takes offsets below 16 hours
_ADVICE = "write str() of it, or a time with a fixed offset (datetime.timezone)"


def timestamp_text(value: datetime) -> str:
    """``timestamp_out`` of ``value``'s wall time (its offset not written)."""
    text = value.replace(tzinfo=None).isoformat(" ", "seconds")
    return text + _fraction(value.microsecond)


def offset_text(offset: timedelta | None) -> str:
    """An offset as ``timestamptz_out`` and ``timetz_out`` write it: ``+02``, ``-03:30``."""
    seconds = int(offset.total_seconds()) if offset is not None else 0
    sign = "-" if seconds < 0 else "+"
    hours, rest = divmod(abs(seconds), 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{sign}{hours:02d}"
    if minutes or seconds:
        text += f":{minutes:02d}"
    if seconds:
        text += f":{seconds:02d}"
    return text


def clock_text(value: time | timedelta) -> str:
    """``time_out``/``timetz_out`` of a ``time``, ``interval_out`` of a ``timedelta``;
    :class:`Unstorable` for a time psycopg cannot send (a zone's, which has no offset without
    a date) or PostgreSQL refuses (an offset of 16 hours or more)."""
    if isinstance(value, timedelta):
        return _interval_text(value)
    text = f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    text += _fraction(value.microsecond)
    if value.tzinfo is None:
        return text
    offset = value.utcoffset()
    if offset is None:
        raise Unstorable(f"psycopg sends no time of a zone without a date; {_ADVICE}")
    if abs(offset.total_seconds()) >= _DISPLACEMENT:
        raise Unstorable(f"PostgreSQL takes no time zone offset of 16 hours or more; {_ADVICE}")
    return text + offset_text(offset)


def _interval_text(value: timedelta) -> str:
    """``interval_out``: psycopg sends the days and the (non-negative) time of day apart."""
    days = value.days
    parts = [f"{days} day{'' if days == 1 else 's'}"] if days else []
    if not days or value.seconds or value.microseconds:
        minutes, second = divmod(value.seconds, 60)
        hour, minute = divmod(minutes, 60)
        sign = "+" if days < 0 else ""
        clock = f"{sign}{hour:02d}:{minute:02d}:{second:02d}" + _fraction(value.microseconds)
        parts.append(clock)
    return " ".join(parts)


def _fraction(microsecond: int) -> str:
    return f".{microsecond:06d}".rstrip("0") if microsecond else ""
