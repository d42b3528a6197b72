"""One SQL outbox whose numeric timestamp column mixes epoch units (an old service version
wrote seconds, a newer one JavaScript's ``Date.now()`` milliseconds, another
``time.time_ns()``): ``status``' oldest pending age compares them as dates, each read by its
own magnitude (outbox/timestamps.py, ``"auto"``), as the relay reads each row's
``occurred_at``.

Found wrong: ``MIN(occurred)`` compared the numbers as numbers, so any seconds value (about
1.7e9) counted as older than every millisecond one (about 1.7e12): a two-day-old millisecond
row behind a one-day-old seconds row showed one day. A value that is no date (before year 1,
past 9999: its row is parked) hid every other row's age when it was the smallest number.
Timestamp columns keep their one ``MIN`` (of the values that are dates:
tests/test_sql_odd_dates.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from config import Settings
from outbox.source import SqlOutboxSource
from outbox.sources import open_source
from tests.timestamp_outbox_helpers import about, ago, pending, selects_watched, write_outbox

_DOUBLE = {"postgresql": "DOUBLE PRECISION", "mysql": "DOUBLE", "sqlite": "REAL"}
_DATETIME = {"postgresql": "TIMESTAMP", "mysql": "DATETIME(6)", "sqlite": "TIMESTAMP"}
SQL_ENGINES = ("postgresql", "mysql", "sqlite")


@pytest.fixture
def outbox(
    database_for: Callable[[str], str],
    sqlite_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> Callable[..., Settings]:
    """``outbox(engine, column_type, values, **source)``: a fresh outbox table on ``engine``
    with one row per value in its ``occurred`` column (in list order), and the settings of a
    source ``svc`` reading it."""

    def make(engine_name: str, column_type: str, values: list[Any], **source: Any) -> Settings:
        url = database_for(engine_name)
        write_outbox(engine_name, url, column_type, values)
        sources = {"svc": {"url": url, "columns": {"occurred_at": "occurred"}, **source}}
        return make_settings(sqlite_database(), sources)

    return make


@pytest.fixture
def statements() -> Iterator[Callable[[SqlOutboxSource], list[str]]]:
    """``statements(source)``: the list the queries ``source`` runs from now on are appended
    to (its table shape read first; transaction statements, SQLite's ``BEGIN``, left out)."""
    with selects_watched() as watch:
        yield watch


def _s(t: datetime) -> int:
    return int(t.timestamp())


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _us(t: datetime) -> int:
    return int(t.timestamp() * 10**6)


def _ns(t: datetime) -> int:
    return int(t.timestamp() * 10**9)


@pytest.mark.parametrize("engine_name", SQL_ENGINES)
@pytest.mark.parametrize(
    ("column", "older", "newer"),
    [
        pytest.param("BIGINT", _ms, _s, id="bigint-ms-s"),
        pytest.param("BIGINT", _us, _ms, id="bigint-us-ms"),
        pytest.param("BIGINT", _ns, _s, id="bigint-ns-s"),
        pytest.param("DOUBLE", lambda t: t.timestamp() * 1000, datetime.timestamp, id="double"),
        pytest.param("DECIMAL(30, 6)", _ms, lambda t: round(t.timestamp(), 6), id="decimal"),
    ],
)
def test_the_oldest_pending_age_compares_epochs_as_dates_not_as_numbers(
    engine_name: str,
    column: str,
    older: Callable[[datetime], Any],
    newer: Callable[[datetime], Any],
    outbox: Callable[..., Settings],
) -> None:
    """The older row is in the finer unit, so the larger number."""
    column_type = _DOUBLE[engine_name] if column == "DOUBLE" else column
    values = [newer(ago(0.5)), older(ago(2)), newer(ago(1)), older(ago(0.25))]
    settings = outbox(engine_name, column_type, values)

    undelivered, age = pending(settings)

    assert undelivered == 4
    assert about(age, 2), age


@pytest.mark.parametrize("engine_name", SQL_ENGINES)
def test_negative_epochs_in_mixed_units_count_by_date(
    engine_name: str, outbox: Callable[..., Settings]
) -> None:
    """Before 1970 the finer unit is the smaller number (1960 in milliseconds is below 1900
    in seconds): still compared as dates, and a seconds value before year 1 (no date, its
    row is parked) is passed over."""
    earliest = datetime(1900, 1, 1, tzinfo=UTC)
    sixties = _ms(datetime(1960, 1, 1, tzinfo=UTC))
    settings = outbox(engine_name, "BIGINT", [sixties, _s(earliest), -9 * 10**10, _ms(ago(1))])

    _, age = pending(settings)

    expected = (datetime.now(UTC) - earliest).total_seconds()
    assert age is not None and expected - 60 <= age <= expected + 600, age


@pytest.mark.parametrize("engine_name", SQL_ENGINES)
def test_values_that_are_no_date_are_passed_over(
    engine_name: str, outbox: Callable[..., Settings]
) -> None:
    """Numbers past any date in any unit, either side of 0 (the relay parks their rows), do
    not break the query nor hide the other rows' age."""
    values = [str(-(10**22)), _s(ago(1)), str(10**22), _ms(ago(2)), str(-(10**20))]
    settings = outbox(engine_name, "DECIMAL(30, 0)", values)

    undelivered, age = pending(settings)

    assert undelivered == 5
    assert about(age, 2), age


def test_nan_and_infinities_are_passed_over(outbox: Callable[..., Settings]) -> None:
    """PostgreSQL's double precision holds NaN and infinities (NaN sorts after every number,
    -Infinity before): no date, passed over."""
    values = [float("-inf"), _s(ago(1)), float("nan"), float(_ms(ago(2))), float("inf")]
    settings = outbox("postgresql", "DOUBLE PRECISION", values)

    undelivered, age = pending(settings)

    assert undelivered == 5
    assert about(age, 2), age


@pytest.mark.parametrize("engine_name", SQL_ENGINES)
def test_a_configured_unit_reads_every_number_in_it(
    engine_name: str, outbox: Callable[..., Settings]
) -> None:
    """``timestamp_unit = "ms"`` names the unit of all numbers: a millisecond value of a
    seconds' magnitude is a 1970 date, and one before year 1 is passed over."""
    day_two = 86_400_000  # 1970-01-02 in milliseconds
    settings = outbox(
        engine_name, "BIGINT", [_ms(ago(1)), -(10**17), day_two, 10**17], timestamp_unit="ms"
    )

    _, age = pending(settings)

    expected = (datetime.now(UTC) - datetime(1970, 1, 2, tzinfo=UTC)).total_seconds()
    assert age is not None and expected - 60 <= age <= expected + 600, age


@pytest.mark.parametrize("engine_name", SQL_ENGINES)
def test_a_timestamp_column_keeps_its_one_min_and_one_query(
    engine_name: str,
    outbox: Callable[..., Settings],
    statements: Callable[[SqlOutboxSource], list[str]],
) -> None:
    """A date column needs no magnitude ranges: one ``MIN``; a numeric column's ranges are
    one query too."""
    days = [ago(1), ago(2), ago(0.5)]
    stamps = [t.replace(tzinfo=None).isoformat(sep=" ") for t in days]
    dated = outbox(engine_name, _DATETIME[engine_name], stamps)
    numbered = outbox(engine_name, "BIGINT", [_s(days[0]), _ms(days[1]), _s(days[2])])

    ran: dict[str, list[str]] = {}
    ages: dict[str, float | None] = {}
    for kind, settings in (("dated", dated), ("numbered", numbered)):
        source = open_source("svc", settings.sources["svc"])
        try:
            assert isinstance(source, SqlOutboxSource)
            ran[kind] = statements(source)
            ages[kind] = source.pending().oldest_age_seconds
        finally:
            source.close()

    assert about(ages["dated"], 2), ages
    assert about(ages["numbered"], 2), ages
    assert len(ran["dated"]) == 1 and len(ran["numbered"]) == 1, ran
    assert ran["dated"][0].lower().count("min(") == 1, ran["dated"]
    assert "CASE" in ran["numbered"][0].upper(), ran["numbered"]
