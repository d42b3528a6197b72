"""An SQL outbox whose date column holds a value that is no date Python holds: PostgreSQL's
``'-infinity'``, ``'infinity'`` and BC dates, MariaDB's zero dates (``'0000-00-00'``, a zero
month or day, where the session's ``sql_mode`` lets them in), SQLite text that is no date.

The relay parks such a row with a reason naming the column, and relays the rest. ``status``
(and health, and the oldest-age gauge: all read :meth:`SqlOutboxSource.pending`) counts the
row as undelivered and leaves it out of the oldest age, which is that of the oldest date.

Found wrong: on PostgreSQL one ``'-infinity'`` (or a BC date; ``'infinity'`` when every
pending row held it) made ``MIN(occurred)`` a value the driver refuses to load, so the whole
source showed ``DataError: timestamp too small`` in ``status``; on MariaDB a zero date, and
on SQLite a text such as ``''``, was the ``MIN`` and hid every other row's age (none shown).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from config import Settings
from outbox.db import create_engine
from outbox.parking import ParkedEvents
from outbox.relay import Relay
from outbox.source import SqlOutboxSource
from outbox.sources import open_source
from outbox.status import source_status
from tests.timestamp_outbox_helpers import DAY, about, pending, selects_watched, write_outbox

_LENIENT_SESSION = {"mysql": "SET SESSION sql_mode = ''"}  # this session only: zero dates in


@pytest.fixture
def outbox(
    database_for: Callable[[str], str],
    sqlite_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> Callable[..., Settings]:
    """``outbox(engine, column_type, values, zone=None)``: a fresh outbox table on ``engine``
    with one row per value in its ``occurred`` column (in list order), and the settings of a
    source ``svc`` reading it (in the PostgreSQL session time zone ``zone``, if given)."""

    def make(
        engine_name: str, column_type: str, values: list[Any], zone: str | None = None
    ) -> Settings:
        url = database_for(engine_name)
        write_outbox(
            engine_name, url, column_type, values, session_sql=_LENIENT_SESSION.get(engine_name)
        )
        if zone is not None:
            url += "?options=" + quote(f"-c timezone={zone}")
        sources = {"svc": {"url": url, "columns": {"occurred_at": "occurred"}}}
        return make_settings(sqlite_database(), sources)

    return make


@pytest.fixture
def statements() -> Iterator[Callable[[SqlOutboxSource], list[str]]]:
    """``statements(source)``: the SELECTs ``source`` runs from now on (its table shape read
    first)."""
    with selects_watched() as watch:
        yield watch


def _stamp(days: float) -> str:
    """A naive UTC time ``days`` ago, as the text every engine reads."""
    return (datetime.now(UTC) - timedelta(days=days)).replace(tzinfo=None).isoformat(sep=" ")


ODD = {
    "postgresql": ["-infinity", "infinity", "0044-03-15 BC", "12000-01-01"],
    "mysql": ["0000-00-00 00:00:00", "2024-00-10 00:00:00", "2024-05-00 00:00:00"],
    "sqlite": ["", "not a date", "0000-00-00 00:00:00", "now", "1st of May", "2024-13-45"],
}
DATE_COLUMNS = [
    pytest.param("postgresql", "TIMESTAMP", id="pg-timestamp"),
    pytest.param("postgresql", "TIMESTAMPTZ", id="pg-timestamptz"),
    pytest.param("postgresql", "DATE", id="pg-date"),
    pytest.param("mysql", "DATETIME(6)", id="mariadb-datetime"),
    pytest.param("mysql", "TIMESTAMP(6) NULL", id="mariadb-timestamp"),
    pytest.param("mysql", "DATE", id="mariadb-date"),
    pytest.param("sqlite", "TIMESTAMP", id="sqlite-timestamp"),
    pytest.param("sqlite", "TEXT", id="sqlite-text"),
]


def _mixed(engine_name: str, column_type: str) -> list[str]:
    """Every odd value of the engine (the smallest or largest there is) among dates, the
    oldest two days old."""
    odd = ODD[engine_name]
    days = [_stamp(d) for d in (1, 2, 0.5)]
    if column_type == "DATE":
        days = [d.split(" ")[0] for d in days]
    return [odd[0], days[0], *odd[1:], days[1], days[2]]


@pytest.mark.parametrize(("engine_name", "column_type"), DATE_COLUMNS)
def test_values_that_are_no_date_are_counted_but_not_aged(
    engine_name: str, column_type: str, outbox: Callable[..., Settings]
) -> None:
    values = _mixed(engine_name, column_type)
    settings = outbox(engine_name, column_type, values)

    undelivered, age = pending(settings)

    assert undelivered == len(values)
    assert about(age, 2, DAY + 600 if column_type == "DATE" else 600), age


@pytest.mark.parametrize("value", ["infinity", "-infinity", "0044-03-15 BC"])
@pytest.mark.parametrize("column_type", ["TIMESTAMP", "TIMESTAMPTZ"])
def test_a_postgres_outbox_of_only_such_values_has_no_age(
    column_type: str, value: str, outbox: Callable[..., Settings]
) -> None:
    settings = outbox("postgresql", column_type, [value, value])

    assert pending(settings) == (2, None)


@pytest.mark.parametrize(
    ("zone", "edge"),
    [("America/Los_Angeles", "0001-01-01 00:00+00"), ("Pacific/Kiritimati", "9999-12-31 23:00+00")],
)
def test_a_postgres_session_zone_moving_a_date_past_the_years_1_to_9999_is_no_error(
    zone: str, edge: str, outbox: Callable[..., Settings]
) -> None:
    """A ``timestamptz`` is loaded in the session's time zone: year 1 UTC is a BC date in Los
    Angeles, the last hour of 9999 UTC is year 10000 at UTC+14, neither loads (the relay
    parks their rows); the bounds are of the session's zone too."""
    settings = outbox("postgresql", "TIMESTAMPTZ", [edge, _stamp(2), edge, _stamp(1)], zone=zone)

    undelivered, age = pending(settings)

    assert undelivered == 4
    assert about(age, 2), age


@pytest.mark.parametrize(("engine_name", "column_type"), DATE_COLUMNS[::3])
def test_status_shows_the_source_not_an_error(
    engine_name: str, column_type: str, outbox: Callable[..., Settings]
) -> None:
    """What ``readmodel status`` prints per source (health and the gauges read the same)."""
    values = _mixed(engine_name, column_type)
    settings = outbox(engine_name, column_type, values)

    shown = source_status("svc", settings, log_head=0, parked=0)

    assert shown.error is None, shown.error
    assert shown.undelivered == len(values)
    assert about(shown.oldest_undelivered_age_seconds, 2, DAY + 600), shown


@pytest.mark.parametrize(("engine_name", "column_type"), DATE_COLUMNS)
def test_the_relay_parks_each_such_row_naming_the_column_and_relays_the_rest(
    engine_name: str, column_type: str, outbox: Callable[..., Settings]
) -> None:
    values = _mixed(engine_name, column_type)
    settings = outbox(engine_name, column_type, values)
    odd = {f"e{n}" for n, v in enumerate(values) if v in ODD[engine_name]}

    relay = Relay(settings)
    try:
        totals = relay.drain()["svc"]
        relayed = [e.event_id for e in relay.log.read("svc")]
        parked = ParkedEvents(relay.log.engine).list(source="svc")
    finally:
        relay.close()
    source_db = create_engine(settings.sources["svc"].url)
    try:
        with source_db.connect() as conn:
            left = conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar_one()
    finally:
        source_db.dispose()

    assert totals.errors == []
    assert relayed == [f"e{n}" for n in range(len(values)) if f"e{n}" not in odd]
    assert sorted(p.event_id or "" for p in parked) == sorted(odd)
    assert all("column 'occurred'" in p.reason for p in parked), [p.reason for p in parked]
    assert left == 0


def test_a_number_in_a_sqlite_date_column_still_counts_as_an_epoch(
    outbox: Callable[..., Settings],
) -> None:
    """SQLite keeps whatever it is given: an integer in a TIMESTAMP column is an epoch to the
    relay, and to the oldest age, as before (numbers sort before any text)."""
    two_days = int((datetime.now(UTC) - timedelta(days=2)).timestamp())
    settings = outbox("sqlite", "TIMESTAMP", ["not a date", _stamp(1), two_days, ""])

    undelivered, age = pending(settings)

    assert undelivered == 4
    assert about(age, 2), age


@pytest.mark.parametrize("engine_name", ["postgresql", "mysql", "sqlite"])
def test_a_date_column_is_still_asked_in_one_query(
    engine_name: str,
    outbox: Callable[..., Settings],
    statements: Callable[[SqlOutboxSource], list[str]],
) -> None:
    column_type = {"postgresql": "TIMESTAMPTZ", "mysql": "DATETIME(6)"}.get(engine_name, "TEXT")
    settings = outbox(engine_name, column_type, _mixed(engine_name, column_type))
    source = open_source("svc", settings.sources["svc"])
    try:
        assert isinstance(source, SqlOutboxSource)
        ran = statements(source)
        age = source.pending().oldest_age_seconds
    finally:
        source.close()

    assert about(age, 2), age
    assert len(ran) == 1, ran
    assert ran[0].lower().count("min(") == 1, ran
