"""A MongoDB outbox's oldest pending timestamp (``status``, metrics, health: per source and
per tenant database at every scrape) is read in one round trip: one ``aggregate`` whose
``$facet`` finds the oldest of each BSON kind and epoch range, where it took one sorted
``find`` per kind (9 with ``timestamp_unit = "auto"``, 900 for 100 tenant databases).

The answer is the one the finds gave: the earliest date of all kinds, a value that is no
date passed over (up to 8 of them per kind), numbers read in the source's unit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from bson import Decimal128
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo.collection import Collection

from config import TimestampUnit
from outbox.mongo_connection import mongo_database as database_name
from outbox.mongo_pending import pending_figures
from tests.mongo_oldest_helpers import CommandNames, oldest_by_finds, watched_client

PENDING = {"dispatched_at": None}
JUNK: list[Any] = [
    "not a date",
    "",
    -1e30,
    float("nan"),
    True,
    None,
    -9e20,  # before year 1 in every unit
    Decimal128("NaN"),
]


def _day(year: int, month: int = 1, day: int = 1) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def _s(moment: datetime) -> int:
    return int(moment.timestamp())


def _ms(moment: datetime) -> float:
    return moment.timestamp() * 1000


@pytest.fixture
def outbox(mongo_database: Callable[[], str]) -> Iterator[tuple[Collection[Any], CommandNames]]:
    """An empty outbox collection, its client's commands recorded."""
    url = mongo_database()
    listener = CommandNames()
    client = watched_client(url, listener)
    try:
        yield client.get_database(database_name(url)).get_collection("outbox"), listener
    finally:
        client.close()


def _fill(outbox: Collection[Any], stamps: list[Any]) -> None:
    """One pending document per stamp, and a dispatched one older than them all."""
    outbox.delete_many({})
    documents = [{"seq": n, "timestamp": s, "dispatched_at": None} for n, s in enumerate(stamps)]
    dispatched = {"seq": -1, "timestamp": _day(1990), "dispatched_at": _day(2024)}
    outbox.insert_many([*documents, dispatched])


CASES = [
    pytest.param(
        "auto",
        [_s(_day(2023, 11, 14)), _ms(_day(2022, 3)), "2022-06-01T00:00:00Z", _day(2023, 6), *JUNK],
        _day(2022, 3),
        id="milliseconds-beyond-later-seconds",
    ),
    pytest.param(
        "auto",
        [
            _s(_day(2023, 11, 14)),
            _ms(_day(2023, 3)),
            "2021-06-01T00:00:00+00:00",
            _day(2023),
            *JUNK,
        ],
        _day(2021, 6),
        id="a-string",
    ),
    pytest.param(
        "auto",
        [_s(_day(2023)), int(_ms(_day(2022))), "2021-01-01T00:00:00Z", _day(2020), *JUNK],
        _day(2020),
        id="a-bson-date",
    ),
    pytest.param(
        "auto",
        [
            _s(_day(2019)),
            Decimal128(str(int(_ms(_day(2018))))),
            int(_day(2021).timestamp() * 10**6),
            int(_day(2017).timestamp() * 10**9),
            "2020-01-01",
            _day(2022),
            *JUNK,
        ],
        _day(2017),
        id="nanoseconds",
    ),
    pytest.param(
        "auto",
        [int(_ms(_day(1960))), _s(_day(1900)), _day(2000), *JUNK],
        _day(1900),
        id="negative-epochs",
    ),
    pytest.param(
        "s",
        [_s(_day(2023, 11, 14)), _s(_day(2023, 11, 14)) * 1000, "junk", _day(2024), *JUNK],
        _day(2023, 11, 14),
        id="unit-s",
    ),
    pytest.param(
        "ms",
        [1_700_000_000, int(_ms(_day(1971))), _day(1975), *JUNK],
        datetime.fromtimestamp(1_700_000, UTC),
        id="unit-ms",
    ),
    pytest.param("auto", JUNK, None, id="no-date"),
    pytest.param("auto", [], None, id="none-pending"),
]


@pytest.mark.parametrize(("unit", "stamps", "expected"), CASES)
def test_the_oldest_pending_is_read_in_one_command(
    unit: TimestampUnit,
    stamps: list[Any],
    expected: datetime | None,
    outbox: tuple[Collection[Any], CommandNames],
) -> None:
    collection, commands = outbox
    _fill(collection, stamps)
    commands.names.clear()

    figures = pending_figures(collection, PENDING, "timestamp", unit)

    assert figures.oldest == expected
    assert figures.undelivered == len(stamps)
    assert commands.names == ["aggregate"]


@pytest.mark.parametrize(("passed_over", "expected"), [(7, _day(2010)), (8, _day(2015))])
def test_up_to_eight_values_that_are_no_date_are_passed_over_per_kind(
    passed_over: int, expected: datetime, outbox: tuple[Collection[Any], CommandNames]
) -> None:
    """Strings and seconds that are no dates sort before the dates of their kind here: past
    8 of them the kind counts for nothing (the relay parks their documents meanwhile)."""
    collection, commands = outbox
    junk = [value for n in range(passed_over) for value in (f"!junk{n}", -9 * 10**10 - n)]
    _fill(collection, [*junk, "2020-01-01T00:00:00Z", _s(_day(2010)), _day(2015), _ms(_day(2023))])
    commands.names.clear()

    assert pending_figures(collection, PENDING, "timestamp", "auto").oldest == expected
    assert commands.names == ["aggregate"]


def _epochs(scale: int) -> st.SearchStrategy[Any]:
    seconds = st.integers(-2_000_000_000, 4_000_000_000)
    return seconds.map(lambda s: s * scale) | seconds.map(lambda s: Decimal128(str(s * scale)))


STAMPS = st.one_of(
    _epochs(1),
    _epochs(1000),
    _epochs(10**6),
    _epochs(10**9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**63), 2**63 - 1),
    st.datetimes(timezones=st.just(UTC)),
    st.datetimes(timezones=st.just(UTC)).map(lambda t: t.isoformat()),
    st.text(max_size=6),
    st.sampled_from([None, True, False, Decimal128("NaN"), Decimal128("-Infinity")]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    stamps=st.lists(STAMPS, max_size=24),
    unit=st.sampled_from(["auto", "s", "ms", "us", "ns"]),
)
def test_one_aggregate_answers_what_the_finds_per_kind_answered(
    stamps: list[Any], unit: TimestampUnit, outbox: tuple[Collection[Any], CommandNames]
) -> None:
    """The oldest the per-kind finds found, and the count ``count_documents`` gives."""
    collection, _ = outbox
    _fill(collection, stamps)

    figures = pending_figures(collection, PENDING, "timestamp", unit)

    assert figures.oldest == oldest_by_finds(collection, PENDING, "timestamp", unit)
    assert figures.undelivered == collection.count_documents(PENDING)
