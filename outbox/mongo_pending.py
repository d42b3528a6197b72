"""The oldest pending document's timestamp in a MongoDB outbox, read as the SQL sources read
theirs (:mod:`outbox.timestamps`): a number as an epoch in the source's ``timestamp_unit``, a
string as ISO 8601, a BSON date as it is.

MongoDB sorts by BSON type first (numbers, then strings, then dates), so one sorted find
would return the oldest number whatever the dates say: the oldest of each kind is found and
the earliest of those counts. A value that is no date (the relay parks its document) is
passed over, up to :data:`_LOOK_PAST` of them per kind. Numbers in mixed epoch units are
compared as numbers within their kind: the smallest counts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import Decimal128
from pymongo import ASCENDING
from pymongo.collection import Collection

from config import TimestampUnit
from outbox.timestamps import BadTimestamp, as_utc

_KINDS = ("number", "string", "date")
_LOOK_PAST = 8


def oldest_pending(
    outbox: Collection[Any], pending: dict[str, Any], field: str, unit: TimestampUnit
) -> datetime | None:
    """The earliest timestamp ``field`` of the documents matching ``pending`` (``None`` when
    none holds a date)."""
    found: list[datetime] = []
    for kind in _KINDS:
        documents = outbox.find(
            {**pending, field: {"$type": kind}},
            projection={field: 1},
            sort=[(field, ASCENDING)],
            limit=_LOOK_PAST,
        )
        for document in documents:
            stamp = _as_date(document.get(field), unit)
            if stamp is not None:
                found.append(stamp)
                break
    return min(found, default=None)


def _as_date(value: Any, unit: TimestampUnit) -> datetime | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    try:
        return as_utc(value, unit)
    except BadTimestamp:
        return None
