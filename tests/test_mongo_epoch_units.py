"""One MongoDB outbox holding timestamps in several epoch units (an old service version wrote
seconds, a JavaScript one ``Date.now()`` milliseconds, stored as a BSON double) beside BSON
dates: each value is read by its own magnitude (outbox/timestamps.py, "auto"), in the log's
``occurred_at`` and in ``status``'s oldest pending age, and no document is lost or parked.

Found wrong: the oldest pending age compared the numbers as numbers, so any seconds value
(about 1.7e9) counted as older than every millisecond one (about 1.7e12): a two-day-old
millisecond document behind a one-hour-old seconds document showed one hour. A Decimal128
epoch was read as text by the relay: parked ("not ISO 8601"), or, eight digits long, taken
for an ISO 8601 date (20231114 seconds logged as 2023-11-14, not 1970-08-23), while
``status`` read it as a number."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import Decimal128
from bson.int64 import Int64

from config import Settings
from tests.outbox_helpers import MongoOutboxDb, init_outbox
from tests.timestamp_outbox_helpers import about, ago, pending, relayed

MOMENT = datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)


@pytest.fixture
def outbox(
    mongo_database: Callable[[], str],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> Iterator[Callable[..., tuple[Settings, MongoOutboxDb]]]:
    opened: list[MongoOutboxDb] = []

    def make(**source: Any) -> tuple[Settings, MongoOutboxDb]:
        url = mongo_database()
        settings = make_settings(pg_database(), {"svc": {"url": url, "batch_size": 4, **source}})
        init_outbox(settings.sources["svc"])
        opened.append(MongoOutboxDb(url))
        return settings, opened[-1]

    yield make
    for db in opened:
        db.close()


def _insert(db: MongoOutboxDb, stamps: list[Any]) -> None:
    """One document per stamp, all of aggregate ``r1``, ``seq`` in list order."""
    db.insert_documents(
        [
            {"aggregatetype": "room", "aggregateid": "r1", "type": "Posted", "payload": {"n": n}}
            | {"timestamp": stamp}
            for n, stamp in enumerate(stamps)
        ]
    )


def test_each_timestamp_is_read_in_the_unit_its_magnitude_says_and_kept_in_seq_order(
    outbox: Callable[..., tuple[Settings, MongoOutboxDb]],
) -> None:
    settings, db = outbox()
    seconds = int(MOMENT.timestamp())
    millis = seconds * 1000 + 123
    stamps = [
        seconds,  # an old version: epoch seconds (int32 would overflow: int64)
        float(millis),  # Date.now() from a JavaScript driver: a BSON double
        MOMENT,  # a BSON date (milliseconds in BSON)
        Int64(millis),
        seconds + 0.5,  # time.time()
        millis * 1000 + 456,  # microseconds
        (millis * 1000 + 456) * 1000,  # time.time_ns()
        Decimal128(str(millis)),
        Decimal128(f"{seconds}.25"),
        Decimal128("20231114"),  # seconds, 1970-08-23; as text, ISO 8601's 2023-11-14
    ]
    _insert(db, stamps)
    whole = MOMENT.replace(microsecond=0)
    ms = MOMENT.replace(microsecond=123000)

    logged, parked = relayed(settings)

    assert parked == []
    assert logged == [
        (0, whole),
        (1, ms),
        (2, ms),  # a BSON date keeps milliseconds
        (3, ms),
        (4, whole.replace(microsecond=500000)),
        (5, MOMENT),
        (6, MOMENT),
        (7, ms),
        (8, whole.replace(microsecond=250000)),
        (9, datetime(1970, 8, 23, 3, 45, 14, tzinfo=UTC)),
    ]


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        pytest.param(lambda t: int(t.timestamp() * 1000), lambda t: int(t.timestamp()), id="ms-s"),
        pytest.param(lambda t: t.timestamp() * 1000, lambda t: int(t.timestamp()), id="double-ms"),
        pytest.param(
            lambda t: int(t.timestamp() * 10**6), lambda t: int(t.timestamp() * 1000), id="us-ms"
        ),
        pytest.param(
            lambda t: int(t.timestamp() * 10**9), lambda t: t.timestamp(), id="ns-float-s"
        ),
        pytest.param(
            lambda t: Decimal128(str(int(t.timestamp() * 1000))),
            lambda t: int(t.timestamp()),
            id="decimal128-ms",
        ),
    ],
)
def test_the_oldest_pending_age_compares_epochs_as_dates_not_as_numbers(
    older: Callable[[datetime], Any],
    newer: Callable[[datetime], Any],
    outbox: Callable[..., tuple[Settings, MongoOutboxDb]],
) -> None:
    """The older document is in the finer unit, so the larger number."""
    settings, db = outbox()
    _insert(db, [newer(ago(0.5)), older(ago(2)), newer(ago(1)), ago(0.25)])

    assert about(pending(settings)[1], 2), pending(settings)[1]


def test_negative_epochs_in_mixed_units_count_by_date(
    outbox: Callable[..., tuple[Settings, MongoOutboxDb]],
) -> None:
    """Before 1970 the finer unit is the smaller number (1960 in milliseconds is below 1900
    in seconds): still compared as dates, and a seconds value before year 1 (no date, its
    document is parked) is passed over."""
    settings, db = outbox()
    sixties = int(datetime(1960, 1, 1, tzinfo=UTC).timestamp() * 1000)
    earliest = datetime(1900, 1, 1, tzinfo=UTC)
    _insert(db, [sixties, int(earliest.timestamp()), -9 * 10**10, ago(1)])

    age = pending(settings)[1]
    expected = (datetime.now(UTC) - earliest).total_seconds()
    assert age is not None and expected - 60 <= age <= expected + 600, age


def test_a_configured_unit_reads_every_number_in_it(
    outbox: Callable[..., tuple[Settings, MongoOutboxDb]],
) -> None:
    """``timestamp_unit = "s"`` names the unit of all numbers: a millisecond epoch is then past
    year 9999 and its document is parked, naming the field and the value; the rest flow on."""
    settings, db = outbox(timestamp_unit="s")
    seconds = int(MOMENT.timestamp())
    _insert(db, [seconds, seconds * 1000, seconds + 1])

    logged, parked = relayed(settings)

    whole = MOMENT.replace(microsecond=0)
    assert logged == [(0, whole), (2, whole + timedelta(seconds=1))]
    assert parked == [f"timestamp (column 'timestamp') is out of range: {seconds * 1000}"]
