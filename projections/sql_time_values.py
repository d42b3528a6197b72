"""Values of PostgreSQL ``timestamptz``, ``timestamp`` and ``date`` columns as they are stored.

The companion of :mod:`projections.sql_other_values`, observed on PostgreSQL through psycopg
(``tests/test_batch_values_property.py`` checks that batches see what the server returns;
``tests/test_dst_wall_times.py`` that DST's wall times are stored as a plain SQL write stores
them, on every write path):

- ``timestamptz``: read back in the session's time zone ``zone``. A naive datetime (or text
  without an offset, or naming a zone) is taken in it as PostgreSQL takes it, ``fold``
  ignored (psycopg does not send it), on every write path alike (:func:`pg_wall_time`): a
  wall time that happens twice (DST ends) is the later one (02:30 in Berlin on 2024-10-27
  is 02:30+01:00), one that never happens (DST starts) is taken with the offset before the
  change and read back past it (02:30 in Paris on 2024-03-31 is 03:30+02:00). An aware
  datetime is the instant it names (its ``fold`` decides its offset: psycopg sends that).
- ``timestamp``: an aware value in the session's time zone, its offset dropped; ``fold``
  dropped. ``date``: a datetime's date (an aware one's in the session's time zone).
- Text: ISO 8601 (seconds rounded to microseconds, half to even), optionally followed by
  an IANA zone name or an abbreviation of a fixed offset (any case; see
  :mod:`projections.pg_abbreviations`), and ``'epoch'``. A time zone
  offset or name is ignored by ``timestamp`` and ``date`` columns, as the server ignores it.
  Other text is refused (:class:`~projections.sql_limits.Unstorable`): ``'now'``,
  ``'today'``... name the time the transaction runs, which a replay does not repeat;
  ``'infinity'`` is stored but psycopg cannot read it back; other formats depend on the
  server's ``DateStyle`` (``'01/02/2024'``).
- A time before year 1 or after year 9999 in the session's time zone is refused (stored, but
  psycopg cannot read it back). One in those years there but not in UTC is read back with a
  fixed offset, as psycopg reads it (``0001-01-01 00:00`` in Paris: ``+00:09:21``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from projections.pg_abbreviations import DYNAMIC, FIXED
from projections.sql_limits import Unstorable
from projections.sql_plain_values import plain

Converter = Callable[[Any], Any]

_ISO = re.compile(
    r"\s*(\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.(\d+))?)?)?)"
    r"(Z|[+-]\d{2}(?::?\d{2})?)?(?:\s+([A-Za-z][A-Za-z0-9_+/-]*))?\s*",
    re.ASCII,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CLOCK = frozenset({"now", "today", "tomorrow", "yesterday"})
_INFINITE = frozenset({"infinity", "+infinity", "-infinity"})
_ADVICE = "write a datetime, a date or ISO 8601 text"
_NO_ZONE = f"it names no time zone PostgreSQL knows; {_ADVICE}"


def parsed(text: str, day: bool = False) -> datetime | date:
    """What PostgreSQL reads of ``text`` (aware when it names an offset or a zone); raises
    :class:`Unstorable` for text it reads otherwise, or reads in more than one way. Seconds
    are rounded to microseconds as ``rint`` rounds (half to even), but for a ``day``: a
    ``date`` column keeps the date written."""
    word = text.strip().lower()
    if word == "epoch":
        return _EPOCH
    if word in _CLOCK:
        raise Unstorable(
            f"it names the time the transaction runs, which a replay would not repeat; "
            f"{_ADVICE} (the event's time)"
        )
    if word in _INFINITE:
        raise Unstorable(f"PostgreSQL stores it but psycopg cannot read it back; {_ADVICE}")
    found = _ISO.fullmatch(text)
    if found is None:
        raise Unstorable(f"PostgreSQL reads such text by its DateStyle setting; {_ADVICE}")
    stamp, fraction, offset, zone_name = found.groups()
    if fraction is not None:
        stamp = stamp[: -len(fraction) - 1]
    try:
        moment = datetime.fromisoformat(stamp + (offset or ""))
    except ValueError:
        raise Unstorable(f"it is no valid date or time; {_ADVICE}") from None
    if fraction is not None and not day:
        micro = round(float("0." + fraction) * 1_000_000)  # rint(frac * 1000000)
        try:
            moment = moment + timedelta(microseconds=micro)
        except OverflowError:
            raise Unstorable(_OUT_OF_RANGE) from None
    if zone_name is not None:
        if moment.tzinfo is not None:
            raise Unstorable(f"it names both an offset and a time zone; {_ADVICE}")
        moment = pg_wall_time(moment, _zone_named(zone_name))
    return moment


def _zone_named(name: str) -> tzinfo:
    """The zone PostgreSQL reads of ``name`` (any case): an abbreviation of its ``Default``
    list first (``PST``: -08:00), then an IANA zone."""
    key = name.lower()
    seconds = FIXED.get(key)
    if seconds is not None:
        return timezone(timedelta(seconds=seconds))
    if key in DYNAMIC:
        raise Unstorable(
            f"PostgreSQL takes the offset of {name!r} from a zone's history at the date; "
            f"{_ADVICE}, with an offset or an IANA zone name"
        )
    canonical = _zone_names().get(key)
    if canonical is None:
        raise Unstorable(_NO_ZONE)
    try:
        return ZoneInfo(canonical)
    except (ZoneInfoNotFoundError, ValueError):
        raise Unstorable(_NO_ZONE) from None


@cache
def _zone_names() -> dict[str, str]:
    return {name.lower(): name for name in available_timezones()}


def pg_wall_time(wall: datetime, zone: tzinfo) -> datetime:
    """The naive ``wall`` taken in ``zone`` as PostgreSQL takes it, ``fold`` ignored: of
    its readings at the offsets before and after a change, the later instant. A wall time
    that happens twice (DST ends) is the second (``fold=1``); one that never happens (DST
    starts) is read at the offset before the change (``fold=0``). PostgreSQL 15 does so for
    a ``timestamp`` cast to ``timestamptz`` (psycopg sends a naive datetime as one) and for
    text alike."""
    first = wall.replace(tzinfo=zone, fold=0)
    second = first.replace(fold=1)
    early, late = first.utcoffset(), second.utcoffset()
    if early is not None and late is not None and late < early:
        return second
    return first


def _in_zone(moment: datetime, zone: tzinfo) -> datetime:
    """``moment`` in ``zone`` as PostgreSQL prints it: a naive one taken there
    (:func:`pg_wall_time`).
    Near year 1 or 9999, where the moment in UTC is out of Python's range, with a fixed
    offset, as psycopg reads it; refused when it is out of that range in ``zone``
    (PostgreSQL stores it, psycopg cannot read it back)."""
    given = moment.tzinfo
    if given is None or (given is not zone and moment.utcoffset() is None):
        moment = pg_wall_time(moment, zone)
    try:
        local = moment.astimezone(UTC).astimezone(zone)
    except OverflowError:
        pass
    else:
        # Already in a UTC ``zone``, both conversions return ``moment`` itself, ``fold``
        # kept: psycopg reads fold=0 (a fixed offset has no time that happens twice).
        return local.replace(fold=0) if local is moment and local.fold else local
    shift = _EDGE_SHIFT if moment.year < 5000 else -_EDGE_SHIFT  # no zone changes offset there
    try:
        local = (moment + shift).astimezone(UTC).astimezone(zone)
        offset = local.utcoffset()
        return (local.replace(tzinfo=None) - shift).replace(tzinfo=timezone(offset))
    except OverflowError:
        raise Unstorable(_OUT_OF_RANGE) from None


def session_time(moment: datetime, zone: tzinfo) -> datetime | None:
    """``moment`` as PostgreSQL's session in ``zone`` stores it: an aware one in a
    ``timestamp`` column as its wall time there (naive), a naive one in a ``timestamptz``
    column as the instant of that wall time there (aware); ``None`` out of range."""
    aware = moment.tzinfo is not None and moment.utcoffset() is not None
    try:
        local = _in_zone(moment, zone)
    except (Unstorable, OverflowError, ValueError):
        return None
    return local.replace(tzinfo=None, fold=0) if aware else local


_EDGE_SHIFT = timedelta(days=2)
_OUT_OF_RANGE = (
    "in the session's time zone it is before year 1 or after year 9999: PostgreSQL stores "
    f"it but psycopg cannot read it back; {_ADVICE} within those years"
)


def _refusing_numbers(convert: Converter) -> Converter:
    """``convert``, refusing a number (or boolean), which PostgreSQL casts to no date or time
    (psycopg sends it as a number: refused at the flush, hidden by a later write), and any
    other value but a date, a datetime or text (a ``time``, a ``timedelta``, bytes, a
    ``UUID``: refused at the flush, "cannot cast type interval to date")."""

    def checked(value: Any) -> Any:
        kind = type(value)
        if kind not in _TIMES:
            if kind not in _NUMBERS:
                value = plain(value)  # a datetime subclass, an IntEnum member...
                kind = type(value)
            if kind in _NUMBERS:
                raise Unstorable(_NO_NUMBER)
            if kind not in _TIMES:
                raise Unstorable(f"PostgreSQL casts no {kind.__name__} to a date or timestamp")
        return convert(value)

    return checked


_NUMBERS = frozenset({int, float, Decimal, bool})
_TIMES = frozenset({datetime, date, str, type(None)})
_NO_NUMBER = "PostgreSQL casts no number to a date or time: write a datetime, or ISO text"


def pg_timestamptz(zone: tzinfo) -> Converter:
    def convert(value: Any) -> Any:
        moment = parsed(value) if type(value) is str else value
        kind = type(moment)
        try:
            if kind is datetime:
                return _in_zone(moment, zone)
            if kind is date:
                return _in_zone(datetime(moment.year, moment.month, moment.day), zone)
        except (OverflowError, ValueError):
            pass
        return value

    checked = _refusing_numbers(convert)
    if not _fixed_offset(zone):
        return checked

    def stored(value: Any) -> Any:
        """A datetime on the session's own zone object (of one offset at every date) is
        stored as it is, ``fold`` dropped, but near years 1 and 9999 (see :func:`_in_zone`):
        a row a handler read back and writes again pays no zone conversion."""
        if type(value) is datetime and value.tzinfo is zone and 1 < value.year < 9999:
            return value.replace(fold=0) if value.fold else value
        return checked(value)

    return stored


def _fixed_offset(zone: tzinfo) -> bool:
    """Whether ``zone`` has one UTC offset at every date (no DST, no history): a
    ``datetime.timezone``, or an IANA zone of the ``Etc`` area or one of its links (``UTC``,
    ``GMT``...), psycopg's ``ZoneInfo`` of a session in UTC. Checked at a few dates too."""
    if isinstance(zone, timezone):
        return True
    key = getattr(zone, "key", None)
    if not isinstance(zone, ZoneInfo) or not isinstance(key, str):
        return False
    if not key.startswith("Etc/") and key not in _ETC_LINKS:
        return False
    offsets = {zone.utcoffset(datetime(year, month, 1)) for year in _YEARS for month in (1, 7)}
    return len(offsets) == 1


# The tzdata links to zones of the Etc area (its "backward" file); all of one offset.
_ETC_LINKS = frozenset(
    {"UTC", "UCT", "GMT", "GMT0", "GMT+0", "GMT-0", "Greenwich", "Universal", "Zulu"}
)
_YEARS = (1, 1850, 1950, 1970, 2000, 2024, 2040, 9999)


def pg_timestamp(zone: tzinfo) -> Converter:
    def convert(value: Any) -> Any:
        kind = type(value)
        try:
            if kind is datetime:
                if value.tzinfo is None or value.utcoffset() is None:
                    return value.replace(fold=0, tzinfo=None) if value.fold else value
                return _in_zone(value, zone).replace(tzinfo=None, fold=0)
            if kind is str:
                moment = parsed(value)
                if type(moment) is date:
                    return datetime(moment.year, moment.month, moment.day)
                return moment.replace(tzinfo=None, fold=0)  # the server ignores the offset
            if kind is date:
                return datetime(value.year, value.month, value.day)
        except (OverflowError, ValueError):
            pass
        return value

    return _refusing_numbers(convert)


def pg_date(zone: tzinfo) -> Converter:
    def convert(value: Any) -> Any:
        kind = type(value)
        try:
            if kind is datetime:
                if value.tzinfo is None or value.utcoffset() is None:
                    return value.date()
                return _in_zone(value, zone).date()
            if kind is str:
                moment = parsed(value, day=True)
                if moment is _EPOCH:
                    return _EPOCH.date()
                return moment.date() if type(moment) is datetime else moment  # zone ignored
        except (OverflowError, ValueError):
            pass
        return value

    return _refusing_numbers(convert)
