"""A MongoDB outbox's oldest pending age (``status``, the metrics) read only BSON dates: a
numeric epoch or an ISO 8601 string gave no age, and one such document made the age unknown
for the whole outbox (MongoDB sorts numbers and strings before dates). It is read now as the
SQL sources read it (outbox/timestamps.py): numbers as epochs in the source's
``timestamp_unit`` (by magnitude when "auto"), strings as ISO 8601, dates as they are; the
oldest of them all counts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import Decimal128

from config import Settings
from outbox.sources import open_source
from tests.outbox_helpers import MongoOutboxDb, init_outbox

DAY = 86_400.0


@pytest.fixture
def outbox(
    mongo_database: Callable[[], str],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> Iterator[Callable[..., tuple[Settings, MongoOutboxDb]]]:
    opened: list[MongoOutboxDb] = []

    def make(**source: Any) -> tuple[Settings, MongoOutboxDb]:
        url = mongo_database()
        settings = make_settings(pg_database(), {"svc": {"url": url, **source}})
        init_outbox(settings.sources["svc"])
        opened.append(MongoOutboxDb(url))
        return settings, opened[-1]

    yield make
    for db in opened:
        db.close()


def _age(settings: Settings) -> float | None:
    source = open_source("svc", settings.sources["svc"])
    try:
        return source.pending().oldest_age_seconds
    finally:
        source.close()


def _insert(db: MongoOutboxDb, stamps: list[Any]) -> None:
    db.insert_documents(
        [
            {"aggregatetype": "room", "aggregateid": f"r{n}", "type": "Posted", "payload": {}}
            | {"timestamp": stamp}
            for n, stamp in enumerate(stamps)
        ]
    )


def _days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


def _about(age: float | None, days: float) -> bool:
    """``age`` is ``days`` old, give or take the minutes a slow machine takes to ask."""
    return age is not None and days * DAY - 60 <= age <= days * DAY + 600


@pytest.mark.parametrize(
    "stamp",
    [
        pytest.param(lambda t: int(t.timestamp()), id="seconds"),
        pytest.param(lambda t: int(t.timestamp() * 1000), id="milliseconds"),
        pytest.param(lambda t: int(t.timestamp() * 1_000_000), id="microseconds"),
        pytest.param(lambda t: int(t.timestamp() * 1_000_000_000), id="nanoseconds"),
        pytest.param(lambda t: t.timestamp(), id="float-seconds"),
        pytest.param(lambda t: Decimal128(str(int(t.timestamp() * 1000))), id="decimal128-ms"),
        pytest.param(lambda t: t.isoformat(), id="iso-string"),
        pytest.param(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"), id="iso-string-z"),
        pytest.param(lambda t: t, id="bson-date"),
    ],
)
def test_the_oldest_pending_age_reads_each_kind_of_timestamp(
    stamp: Callable[[datetime], Any], outbox: Callable[..., tuple[Settings, MongoOutboxDb]]
) -> None:
    settings, db = outbox()
    _insert(db, [stamp(_days_ago(2)), stamp(_days_ago(1))])

    assert _about(_age(settings), 2), _age(settings)


def test_the_oldest_counts_whatever_kind_holds_it(
    outbox: Callable[..., tuple[Settings, MongoOutboxDb]],
) -> None:
    """Numbers sort before strings before dates in MongoDB: the oldest is compared as dates."""
    settings, db = outbox()
    _insert(
        db,
        [
            _days_ago(1),
            int(_days_ago(2).timestamp() * 1000),
            _days_ago(3).isoformat(),
            int(_days_ago(1.5).timestamp()),
        ],
    )

    assert _about(_age(settings), 3), _age(settings)


def test_a_configured_timestamp_unit_is_used(
    outbox: Callable[..., tuple[Settings, MongoOutboxDb]],
) -> None:
    """Milliseconds before 1973-03-03 look like seconds by magnitude: the unit says."""
    settings, db = outbox(timestamp_unit="ms")
    moment = datetime(1971, 1, 1, tzinfo=UTC)
    _insert(db, [int(moment.timestamp() * 1000)])

    age = _age(settings)
    expected = (datetime.now(UTC) - moment).total_seconds()
    assert age is not None and expected - 60 <= age <= expected + 600, age


def test_a_timestamp_that_is_no_date_leaves_the_others_counted(
    outbox: Callable[..., tuple[Settings, MongoOutboxDb]],
) -> None:
    """A row the relay will park (no date) does not hide the age of the others."""
    settings, db = outbox()
    _insert(db, ["not a date", -1e30, _days_ago(1)])

    assert _about(_age(settings), 1), _age(settings)
