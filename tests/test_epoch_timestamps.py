"""A numeric timestamp column is a Unix epoch in seconds, milliseconds, microseconds or
nanoseconds (told by magnitude, or by the source's ``timestamp_unit``), and a ``DATE`` column
is midnight UTC: the relay logs each row's ``occurred_at`` as meant. A microsecond or
nanosecond epoch was read as milliseconds, out of range: every row was parked; a ``DATE``
value was parked as an unsupported type."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from config import ConfigError, Settings, load_settings
from tests.cli_helpers import write_config
from tests.conftest import ENGINES
from tests.timestamp_outbox_helpers import pending, relayed, write_outbox

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROS = {"s": 1_000_000, "ms": 1_000, "us": 1}


def _epoch(moment: datetime, unit: str) -> int:
    """``moment`` as an integer epoch in ``unit`` (whole units of it)."""
    micros = (moment - EPOCH) // timedelta(microseconds=1)
    return micros * 1000 if unit == "ns" else micros // _MICROS[unit]


def _read_back(value: int, unit: str) -> datetime:
    if unit == "ns":
        return EPOCH + timedelta(microseconds=value // 1000)
    return EPOCH + timedelta(microseconds=value * _MICROS[unit])


def _settings(
    make_settings: Callable[..., Settings], store: str, url: str, **source: Any
) -> Settings:
    return make_settings(
        store,
        {"svc": {"url": url, "batch_size": 5, "columns": {"occurred_at": "occurred"}, **source}},
    )


MOMENTS = (
    datetime(1973, 3, 4, tzinfo=UTC),
    datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC),
    datetime(2262, 4, 11, tzinfo=UTC),  # a signed BIGINT of nanoseconds ends on this day
    datetime(2300, 1, 1, 12, tzinfo=UTC),
)


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("store_engine", ["postgresql", "sqlite"])
def test_bigint_epochs_are_read_in_the_unit_their_magnitude_says(
    engine_name: str,
    store_engine: str,
    database_for: Callable[[str], str],
    make_settings: Callable[..., Settings],
) -> None:
    url = database_for(engine_name)
    values = [
        _epoch(moment, unit)
        for unit in ("s", "ms", "us", "ns")
        for moment in MOMENTS
        if unit != "ns" or moment.year < 2263
    ]
    expected = [
        _read_back(_epoch(moment, unit), unit)
        for unit in ("s", "ms", "us", "ns")
        for moment in MOMENTS
        if unit != "ns" or moment.year < 2263
    ]
    # time.time_ns() keeps nanoseconds: rounded to the microsecond a datetime holds.
    values += [1_700_000_000_123_456_789, 1_700_000_000_123_456_499, -1_000_000_000_123_456]
    expected += [
        datetime(2023, 11, 14, 22, 13, 20, 123457, tzinfo=UTC),
        datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC),
        EPOCH - timedelta(seconds=1_000_000_000, microseconds=123456),
    ]
    write_outbox(engine_name, url, "BIGINT", values)
    settings = _settings(make_settings, database_for(store_engine), url)

    age = pending(settings)[1]
    logged, parked = relayed(settings)

    assert parked == []
    assert logged == list(enumerate(expected))
    assert expected[1] == MOMENTS[1].replace(microsecond=0)  # seconds: whole ones
    assert expected[9] == MOMENTS[1]  # microseconds: exact
    assert age is not None and age > 0  # MIN(occurred) read as an epoch too (status)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_date_column_is_midnight_utc(
    engine_name: str,
    database_for: Callable[[str], str],
    sqlite_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    url = database_for(engine_name)
    days = [date(2024, 5, 17), date(1969, 7, 20), date(2300, 12, 31)]
    write_outbox(engine_name, url, "DATE", [d.isoformat() for d in days])
    settings = _settings(make_settings, sqlite_database(), url)

    age = pending(settings)[1]
    logged, parked = relayed(settings)

    assert parked == []
    assert logged == [(n, datetime(d.year, d.month, d.day, tzinfo=UTC)) for n, d in enumerate(days)]
    assert age is not None and age > 0


@pytest.mark.parametrize("engine_name", ENGINES)
def test_timestamp_unit_forces_the_unit_and_values_past_any_date_are_parked(
    engine_name: str,
    database_for: Callable[[str], str],
    sqlite_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    """A millisecond epoch of 1970-01-02 is read as seconds by magnitude: ``timestamp_unit``
    says what it is. In seconds, a microsecond epoch is past year 9999: that row is parked,
    naming the column and the value, and the row after it is relayed."""
    millis = database_for(engine_name)
    write_outbox(engine_name, millis, "BIGINT", [86_400_000, 1_700_000_000_123])
    seconds = database_for(engine_name)
    write_outbox(
        engine_name, seconds, "BIGINT", [1_700_000_000, 1_700_000_000_123_456, 1_700_000_001]
    )

    in_millis, none_parked = relayed(
        _settings(make_settings, sqlite_database(), millis, timestamp_unit="ms")
    )
    in_seconds, parked = relayed(
        _settings(make_settings, sqlite_database(), seconds, timestamp_unit="s")
    )

    assert none_parked == []
    assert in_millis == [
        (0, datetime(1970, 1, 2, tzinfo=UTC)),
        (1, datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)),
    ]
    assert in_seconds == [
        (0, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        (2, datetime(2023, 11, 14, 22, 13, 21, tzinfo=UTC)),
    ]
    assert parked == ["timestamp (column 'occurred') is out of range: 1700000000123456"]


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_decimal_epoch_is_exact_and_one_past_any_date_is_parked(
    engine_name: str,
    database_for: Callable[[str], str],
    sqlite_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    url = database_for(engine_name)
    write_outbox(engine_name, url, "DECIMAL(30, 0)", [1_700_000_000_123_456, str(10**22)])
    settings = _settings(make_settings, sqlite_database(), url)

    logged, parked = relayed(settings)

    assert logged == [(0, datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC))]
    assert len(parked) == 1
    assert parked[0].startswith("timestamp (column 'occurred') is out of range: 1"), parked


def test_a_bad_timestamp_unit_is_refused_naming_the_key_and_file(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "rm.toml",
        {
            "store": {"url": f"sqlite:///{tmp_path / 'store.db'}"},
            "sources": {"svc": {"url": "sqlite:///svc.db", "timestamp_unit": "micros"}},
        },
    )

    with pytest.raises(ConfigError) as refused:
        load_settings(config)

    message = str(refused.value)
    assert "sources.svc.timestamp_unit" in message, message
    assert str(config) in message, message
    assert "'auto', 's', 'ms', 'us' or 'ns'" in message, message
