"""For tests/test_mongo_oldest_pending_one_round_trip.py: the commands a MongoClient sends,
and the oldest pending timestamp as the per-kind finds that ``pending_figures`` replaced
read it (one sorted find per BSON kind or epoch range), to compare the two on one server."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, MongoClient, monitoring
from pymongo.collection import Collection

from config import TimestampUnit
from outbox.mongo_pending import _LOOK_PAST, _as_date, _number_ranges


class CommandNames(monitoring.CommandListener):
    """The names of the commands started through the clients it listens to, in order."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.pipelines: list[list[dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)
        if event.command_name == "aggregate":
            self.pipelines.append(list(event.command["pipeline"]))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def watched_client(url: str, listener: CommandNames) -> MongoClient[dict[str, Any]]:
    """A client reading BSON as a MongoDB source does (aware dates, out-of-range dates
    kept), whose commands ``listener`` records."""
    return MongoClient(
        url, tz_aware=True, datetime_conversion="DATETIME_AUTO", event_listeners=[listener]
    )


def oldest_by_finds(
    outbox: Collection[Any], pending: dict[str, Any], field: str, unit: TimestampUnit
) -> datetime | None:
    """The earliest date of the first :data:`_LOOK_PAST` documents of each kind, by finds."""
    found: list[datetime] = []
    for kind in [*_number_ranges(unit), {"$type": "string"}, {"$type": "date"}]:
        documents = outbox.find(
            {**pending, field: kind},
            projection={field: 1},
            sort=[(field, ASCENDING)],
            limit=_LOOK_PAST,
        )
        dates = (_as_date(document.get(field), unit) for document in documents)
        first = next((stamp for stamp in dates if stamp is not None), None)
        if first is not None:
            found.append(first)
    return min(found, default=None)
