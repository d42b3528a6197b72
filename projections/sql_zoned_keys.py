"""PostgreSQL ``timetz`` keys, equal as the server finds them.

:class:`projections.sql_tx.SqlTx` files a batch's writes and reads in dicts under their keys:
two keys Python finds equal are one row in a batch. Python finds two aware times equal when
they are the same instant (``10:00+00:00 == 12:00+02:00``); PostgreSQL's ``timetz`` when the
time and the offset both are (``'10:00+00'::timetz = '12:00+02'::timetz`` is false): one batch
writing both stored one row, two batches two. A ``Time(timezone=True)`` key column's key
converter gives a :class:`ZonedTime`, the same time (psycopg sends it as the ``time`` it is)
equal to one of the same wall time and offset only; rows a prefetch reads are filed under one
too (:func:`zoned`).

SQLite stores a time's wall time, its offset dropped: its converter already gives the naive
time read back, equal as SQLite finds it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import time, timedelta
from typing import Any

__all__ = ["ZonedTime", "zoned", "zoned_key"]


class ZonedTime(time):
    """An aware time equal (and hashed alike) to a time of the same wall time and offset."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, time):
            return _identity(self) == _identity(other)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        if isinstance(other, time):
            return _identity(self) != _identity(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(_identity(self))

    def __repr__(self) -> str:
        return repr(_plain(self))  # a row lock's key (sql_prefetch.row_lock_key) hashes it


def _identity(value: time) -> tuple[int, int, int, int, timedelta | None]:
    return value.hour, value.minute, value.second, value.microsecond, value.utcoffset()


def _plain(value: time) -> time:
    return time(value.hour, value.minute, value.second, value.microsecond, value.tzinfo)


def zoned(value: Any) -> Any:
    """``value`` as a ``timetz`` key: an aware ``time`` as a :class:`ZonedTime`; any other
    value (``None``, a naive time) as it is."""
    if type(value) is time and value.tzinfo is not None:
        return ZonedTime(value.hour, value.minute, value.second, value.microsecond, value.tzinfo)
    return value


def zoned_key(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The key converter of a ``timetz`` column whose values ``convert`` converts."""

    def key(value: Any) -> Any:
        if type(value) is ZonedTime:
            return value
        return zoned(convert(value))

    return key
