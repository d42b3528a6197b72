"""A MongoDB outbox's pending figures (``status``, metrics, health: per source and per tenant
database at every scrape) are one command: one ``aggregate`` gives the undelivered count
(a ``$count`` beside the oldest timestamp's ``$facet``) and the server's clock (``$$NOW``),
where ``count_documents``, the oldest's ``aggregate`` and an admin ``hello`` took three
(300 for 100 tenant databases on one server).

The figures are those the three commands gave: the count exact (0 and no age when nothing
waits), the age the server's clock less the earliest date of any kind."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from pymongo import MongoClient

from config import Settings, SourceSettings
from outbox.log import EventLog
from outbox.mongo import MongoOutboxSource
from outbox.mongo_connection import mongo_database as database_name
from outbox.status import source_statuses
from tests.mongo_oldest_helpers import CommandNames, watched_client
from tests.outbox_helpers import migrate_store

DAY = 86_400.0
JUNK: list[Any] = ["not a date", -1e30, float("nan"), None, True]


def _ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


def _about(age: float | None, days: float | None) -> bool:
    """``age`` is ``days`` old, give or take the minutes a slow machine takes to ask."""
    if days is None:
        return age is None
    return age is not None and days * DAY - 60 <= age <= days * DAY + 600


def _documents(pending: list[Any], dispatched: int) -> list[dict[str, Any]]:
    """One pending document per timestamp, then ``dispatched`` older dispatched ones."""
    stamps = [(stamp, None) for stamp in pending] + [(_ago(30), _ago(20))] * dispatched
    return [
        {"seq": n, "aggregatetype": "room", "aggregateid": f"r{n}", "type": "Posted"}
        | {"payload": {}, "timestamp": stamp, "dispatched_at": done}
        for n, (stamp, done) in enumerate(stamps)
    ]


def _mixed() -> list[Any]:
    """Timestamps of every kind, made when a test runs (not at collection: the suite may
    reach the test many minutes later)."""
    return [
        int(_ago(2).timestamp()),  # seconds
        _ago(3).timestamp() * 1000,  # milliseconds, a double
        int(_ago(1).timestamp() * 10**6),  # microseconds
        _ago(4).isoformat(),
        _ago(1.5),
        *JUNK,
    ]


MIXED_COUNT = 5 + len(JUNK)

CASES = [
    pytest.param({"on_dispatch": "mark"}, list, 0, 0, None, id="empty-outbox"),
    pytest.param({"on_dispatch": "mark"}, list, 3, 0, None, id="all-dispatched"),
    pytest.param({"on_dispatch": "mark"}, _mixed, 4, MIXED_COUNT, 4, id="mixed-kinds-some-sent"),
    pytest.param({"on_dispatch": "mark"}, JUNK.copy, 2, len(JUNK), None, id="no-date-pending"),
    pytest.param({}, lambda: [_ago(2), int(_ago(5).timestamp() * 1000)], 0, 2, 5, id="delete-mode"),
    pytest.param(
        {"on_dispatch": "mark", "columns": {"occurred_at": ""}},
        _mixed,
        1,
        MIXED_COUNT,
        None,
        id="no-timestamp-field",
    ),
]


@pytest.mark.parametrize(("options", "pending", "dispatched", "count", "days"), CASES)
def test_the_pending_figures_are_one_aggregate(
    options: dict[str, Any],
    pending: Callable[[], list[Any]],
    dispatched: int,
    count: int,
    days: float | None,
    mongo_database: Callable[[], str],
) -> None:
    url = mongo_database()
    commands = CommandNames()
    client = watched_client(url, commands)
    source = MongoOutboxSource("chat", SourceSettings(url=url, **options), client=client)
    try:
        documents = _documents(pending(), dispatched)
        if documents:
            client.get_database(database_name(url)).get_collection("outbox").insert_many(documents)
        commands.names.clear()

        stats = source.pending()

        assert commands.names == ["aggregate"]
        # Only the timestamp reaches $facet, not whole documents (payloads and all).
        assert commands.pipelines[-1][1] == {
            "$project": {source.settings.columns.occurred_at or "_id": 1}
        }
        assert stats.undelivered == count
        assert _about(stats.oldest_age_seconds, days), stats
    finally:
        client.close()


TENANTS = 5


@pytest.fixture
def tenants(
    mongo_database: Callable[[], str],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> Iterator[tuple[Settings, EventLog]]:
    """A source group ``chat`` of one database per tenant on one server: tenant ``tN``
    holds N + 1 pending documents, the oldest N + 1 days old, and a dispatched one."""
    store = pg_database()
    migrate_store(store)
    members: dict[str, dict[str, Any]] = {}
    for n in range(TENANTS):
        url = mongo_database()
        members[f"chat:t{n}"] = {"url": url, "tenant": f"t{n}", "on_dispatch": "mark"}
        members[f"chat:t{n}"]["columns"] = {"tenant": ""}
        with MongoClient(url, tz_aware=True) as client:
            outbox = client.get_database(database_name(url)).get_collection("outbox")
            outbox.insert_many(_documents([_ago(day + 1) for day in range(n + 1)], 1))
    log = EventLog(store)
    yield make_settings(store, members), log
    log.engine.dispose()


def test_a_status_pass_over_tenant_databases_is_one_command_each(
    tenants: tuple[Settings, EventLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every client the sources open is watched (``mongo_client`` builds them all). Closing
    a source ends its client's sessions; it has no lease to hand over (a ``delete`` per
    tenant database before)."""
    settings, log = tenants
    commands = CommandNames()
    watched = partial(MongoClient, event_listeners=[commands])
    monkeypatch.setattr("outbox.mongo_connection.MongoClient", watched)

    statuses = {s.source: s for s in source_statuses(settings, log)}

    assert commands.names == ["aggregate", "endSessions"] * TENANTS
    for n in range(TENANTS):
        status = statuses[f"chat:t{n}"]
        assert status.error is None, status
        assert status.undelivered == n + 1
        assert _about(status.oldest_undelivered_age_seconds, n + 1), status
