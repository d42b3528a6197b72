"""The oldest pending document's timestamp in a MongoDB outbox, read as the SQL sources read
theirs (:mod:`outbox.timestamps`): a number as an epoch in the source's ``timestamp_unit``, a
string as ISO 8601, a BSON date as it is.

MongoDB sorts by BSON type first (numbers, then strings, then dates), so one sort would
give the oldest number whatever the dates say: the oldest of each kind is found and the
earliest of those counts. Numbers are no one kind either when ``timestamp_unit`` is
``"auto"``: a seconds epoch (1.7e9) is a smaller number than any millisecond one (1.7e12)
whatever their dates, so the oldest is found within each range of magnitudes read in one
unit, where numeric order is date order. A value that is no date (the relay parks its
document) is passed over, up to :data:`_LOOK_PAST` of them per kind or range.

All kinds are sorted in one ``aggregate`` (a ``$facet`` of one sub-pipeline per kind), which
also counts the pending documents (``$count``) and reads the server's clock (``$$NOW``,
MongoDB 4.2+) the age is taken against: one round trip per call, where ``status`` and the
metrics ask every source and tenant database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.collection import Collection

from config import TimestampUnit
from outbox.mongo_values import UnsupportedValue, plain_timestamp
from outbox.timestamps import AUTO_LIMITS, BEYOND, BadTimestamp, as_utc

_LOOK_PAST = 8


@dataclass(frozen=True, slots=True)
class PendingFigures:
    undelivered: int
    oldest: datetime | None
    """The earliest timestamp of the pending documents (``None``: none holds a date)."""
    server_now: datetime | None
    """The server's clock when it ran the ``aggregate``."""


def pending_figures(
    outbox: Collection[Any], pending: dict[str, Any], field: str, unit: TimestampUnit
) -> PendingFigures:
    """The documents matching ``pending``: how many, and their earliest timestamp ``field``
    (none looked for when ``field`` is ``""``)."""
    kinds = [*_number_ranges(unit), {"$type": "string"}, {"$type": "date"}] if field else []
    facets: dict[str, list[dict[str, Any]]] = {"count": [{"$count": "n"}]}
    facets |= {
        f"k{n}": [
            {"$match": {field: kind}},
            {"$sort": {field: ASCENDING}},
            {"$limit": _LOOK_PAST},
        ]
        for n, kind in enumerate(kinds)
    }
    # Only the field goes on: $facet takes every pending document, payloads and all.
    narrow = {"$project": {field: 1} if field else {"_id": 1}}
    pipeline = [{"$match": pending}, narrow, {"$facet": facets}, {"$addFields": {"now": "$$NOW"}}]
    result = next(outbox.aggregate(pipeline), {})
    counted = result.pop("count", [])  # MongoDB's $count gives no document for none
    now = result.pop("now", None)
    found: list[datetime] = []
    for documents in result.values():
        dates = (_as_date(document.get(field), unit) for document in documents)
        first = next((stamp for stamp in dates if stamp is not None), None)
        if first is not None:
            found.append(first)
    return PendingFigures(
        undelivered=int(counted[0]["n"]) if counted else 0,
        oldest=min(found, default=None),
        server_now=_aware(now) if isinstance(now, datetime) else None,
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _number_ranges(unit: TimestampUnit) -> list[dict[str, float]]:
    """Filters of the numbers read in one unit each (NaN and numbers past any date in none).
    Bounds are doubles: MongoDB compares them exactly with any number type, and 10**21 is no
    64-bit integer."""
    if unit != "auto":
        return [{"$gt": -float(BEYOND), "$lt": float(BEYOND)}]
    first = float(AUTO_LIMITS[0][0])
    ranges = [{"$gte": -first, "$lte": first}]
    limits = [float(limit) for limit, _ in AUTO_LIMITS] + [float(BEYOND)]
    for low, high in zip(limits, limits[1:], strict=False):
        ranges += [{"$gt": low, "$lte": high}, {"$gte": -high, "$lt": -low}]
    return ranges


def _as_date(value: Any, unit: TimestampUnit) -> datetime | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return as_utc(plain_timestamp(value), unit)
    except (BadTimestamp, UnsupportedValue):
        return None
