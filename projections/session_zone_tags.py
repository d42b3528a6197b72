"""Cache tags and keys of timestamps in a PostgreSQL session whose ``TimeZone`` is not UTC.

Tags take a naive timestamp as UTC (:mod:`projections.tag_spelling`), and PostgreSQL does
not: a ``timestamp`` column stores an aware value as its wall time in the session's time
zone (in Europe/Berlin, the event ``2024-05-01T10:00:00Z`` writes the row ``12:00``), a
``timestamptz`` one takes a naive value there (``10:00`` is 08:00 UTC). A get by the row's
key and the event of the row then tagged different instants, and the entry stayed stale.

So both sides spell what the session stores:

- a SQL store's applied batch also invalidates each tag whose id is a timestamp as the
  session stores it (:func:`with_session_spellings`): an aware id as its wall time in the
  zone, a naive one as the instant of that wall time there;
- a get's key is read as the session stores it (:func:`session_key`): an aware key of a
  ``timestamp`` column as its wall time in the zone, a naive key of a ``timestamptz``
  column as that instant. The entry is tagged with the row's own value, whichever way
  the key is spelled (one entry for all of them).

A session in UTC (or any zone of offset 0 at every date) changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from projections.sql_time_values import session_time
from projections.tag_spelling import tag_moment

_DATES = tuple(
    datetime(year, month, 1) for year in (1900, 1970, 2000, 2024, 2040) for month in (1, 7)
)


@lru_cache(maxsize=64)
def _utc(zone: tzinfo) -> bool:
    """Whether ``zone`` is UTC at every date (then tags already spell what it stores)."""
    try:
        return all(zone.utcoffset(day) == timedelta(0) for day in _DATES)
    except Exception:  # a zone that cannot say: spell it out
        return False


def with_session_spellings(tags: set[str] | None, zone: tzinfo | None) -> set[str] | None:
    """``tags`` and, for each whose id is a timestamp, the tag of that timestamp as a session
    in ``zone`` stores it; ``tags`` itself when the session is in UTC."""
    if not tags or zone is None or _utc(zone):
        return tags
    spelled = set(tags)
    for tag in tags:
        found = tag_moment(tag)
        if found is not None:
            head, moment = found
            stored = session_time(moment, zone)
            if stored is not None:
                spelled.add(head + stored.isoformat())
    return spelled


def session_key(column: sa.Column[Any], value: Any, zone: tzinfo | None) -> Any:
    """A key's timestamp as a session in ``zone`` stores it in ``column``: an aware one in a
    ``timestamp`` column as its wall time in the zone, a naive one in a ``timestamptz``
    column as the instant of that wall time (PostgreSQL compares them so); any other value,
    or a session in UTC, as it is."""
    if type(value) is not datetime or zone is None or _utc(zone):
        return value
    column_type = column.type
    if not isinstance(column_type, sa.DateTime):
        return value
    aware = value.tzinfo is not None and value.utcoffset() is not None
    if aware == bool(column_type.timezone):
        return value
    stored = session_time(value, zone)
    return value if stored is None else stored
