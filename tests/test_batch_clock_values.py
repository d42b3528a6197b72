"""Time-of-day and interval columns: a value is kept by the upsert as the column stores it
(and psycopg reads it back), or refused there naming the column, never refused only at the
flush, stored unreadable, nor read differently in its batch and in a later one. Each
expectation was checked against the database (write, commit, read back)."""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from tests.batch_value_helpers import outcomes, problems, read_back, refused, store

_PARIS = ZoneInfo("Europe/Paris")
_T = datetime.time
_D = datetime.timedelta


def _tz(hours: int, minutes: int = 0) -> datetime.timezone:
    return datetime.timezone(datetime.timedelta(hours=hours, minutes=minutes))


R = "refused"
_AWARE = datetime.datetime(2024, 7, 2, 12, tzinfo=_PARIS)
# value: (TIME, TIME WITH TIME ZONE in a UTC session, the same in a Europe/Paris session)
_TIMES: list[tuple[Any, Any, Any, Any]] = [
    ("12:00", _T(12), _T(12, tzinfo=datetime.UTC), R),  # Paris: the offset of today
    ("1:2", _T(1, 2), _T(1, 2, tzinfo=datetime.UTC), R),
    ("12:00:00.1234565", _T(12, 0, 0, 123456), _T(12, 0, 0, 123456, datetime.UTC), R),
    ("12:00:60", _T(12, 1), _T(12, 1, tzinfo=datetime.UTC), R),
    ("12:00+02", _T(12), _T(12, tzinfo=_tz(2)), _T(12, tzinfo=_tz(2))),
    ("12:00:00-05:30", _T(12), _T(12, tzinfo=_tz(-5, -30)), _T(12, tzinfo=_tz(-5, -30))),
    ("12:00Z", _T(12), _T(12, tzinfo=datetime.UTC), _T(12, tzinfo=datetime.UTC)),
    ("12:00 pst", _T(12), _T(12, tzinfo=_tz(-8)), _T(12, tzinfo=_tz(-8))),
    ("0:30 PM", _T(12, 30), _T(12, 30, tzinfo=datetime.UTC), R),
    ("12:00 AM", _T(0), _T(0, tzinfo=datetime.UTC), R),
    ("allballs", _T(0), _T(0, tzinfo=datetime.UTC), _T(0, tzinfo=datetime.UTC)),
    ("T12:00", _T(12), _T(12, tzinfo=datetime.UTC), R),
    ("1200", _T(12), _T(12, tzinfo=datetime.UTC), R),
    ("2024-07-01 12:00", _T(12), _T(12, tzinfo=datetime.UTC), _T(12, tzinfo=_tz(2))),
    ("2024-01-01 12:00", _T(12), _T(12, tzinfo=datetime.UTC), _T(12, tzinfo=_tz(1))),
    (_T(12), _T(12), _T(12, tzinfo=datetime.UTC), R),
    (_T(12, tzinfo=_tz(2)), _T(12), _T(12, tzinfo=_tz(2)), _T(12, tzinfo=_tz(2))),
    (
        _T(12, tzinfo=_tz(-15, -59)),
        _T(12),
        _T(12, tzinfo=_tz(-15, -59)),
        _T(12, tzinfo=_tz(-15, -59)),
    ),
    (datetime.datetime(2024, 1, 2, 12), _T(12), R, R),
    (
        _AWARE,
        _T(10),  # in the session's zone: 12:00 in a Paris session
        _T(10, tzinfo=datetime.UTC),
        _T(12, tzinfo=_tz(2)),
    ),
    (_D(days=1, hours=1), _T(1), R, R),  # interval to time: days dropped
    (_D(hours=-1), _T(23), R, R),
    # Refused where PostgreSQL refuses it (at the flush)...
    ("25:00", R, R, R),
    ("12:60", R, R, R),
    ("13:00 PM", R, R, R),
    ("12:00+16", R, R, R),
    ("12:00 Europe/Paris", R, R, R),
    ("2024-01-01T12:00", R, R, R),
    ("abc", R, R, R),
    ("", R, R, R),
    (_T(12, tzinfo=_PARIS), R, R, R),  # psycopg cannot send it
    (_T(12, tzinfo=_tz(16)), R, R, R),
    (5, R, R, R),
    (1.5, R, R, R),
    (datetime.date(2024, 1, 2), R, R, R),
    (True, R, R, R),
    # ... stores but psycopg cannot read back ...
    ("24:00", R, R, R),
    ("23:59:60", R, R, R),
    ("23:59:59.9999995", R, R, R),
    # ... or stores what a replay would not repeat.
    ("now", R, R, R),
    ("12:00 MSK", R, R, R),  # an offset PostgreSQL takes from Moscow's history, today
]


def _time_tables(metadata: sa.MetaData) -> list[sa.Table]:
    def columns() -> list[sa.Column[Any]]:
        return [
            sa.Column("id", sa.Text, primary_key=True),
            sa.Column("t", sa.Time),
            sa.Column("tz", sa.Time(timezone=True)),
            sa.Column("p0", postgresql.TIME(precision=0)),
        ]

    plain = sa.Table("clock_plain", metadata, *columns())  # the driver-level plan
    mixed = sa.Table("clock_mixed", metadata, *columns(), sa.Column("doc", sa.JSON))
    return [plain, mixed]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris"])
def test_time_values_read_in_their_batch_as_postgresql_reads_them_back_or_are_refused(
    zone: str, pg_database: Callable[[], str]
) -> None:
    """Text was kept as written in its batch (``'12:00'``; later ``time(12, 0)``), ``24:00``
    was stored and no later read succeeded, a number failed the batch at the flush."""
    metadata = sa.MetaData()
    tables = _time_tables(metadata)
    values = [value for value, *_ in _TIMES]
    with store(pg_database(), metadata, zone) as engine:
        found = {
            (table.name, column): outcomes(engine, table, column, values)
            for table in tables
            for column in ("t", "tz", "p0")
        }
    assert {key: problems(each) for key, each in found.items() if problems(each)} == {}
    paris = zone == "Europe/Paris"
    for (table, column), each in found.items():
        if column == "p0":  # TIME(0): rounded to seconds, half up
            stored = read_back(each)
            assert stored["'12:00:00.1234565'"] == _T(12), table
            continue
        expected = {}
        for value, plain, utc, in_paris in _TIMES:
            expected[repr(value)] = plain if column == "t" else in_paris if paris else utc
        if column == "t" and paris:
            expected[repr(_AWARE)] = _T(12)
        assert read_back(each) == {k: v for k, v in expected.items() if v is not R}, column
        assert set(refused(each)) == {k for k, v in expected.items() if v is R}, column


def test_time_precision_rounds_half_up_and_refuses_midnight_reached(
    pg_database: Callable[[], str],
) -> None:
    """``TIME(0)`` rounds the seconds as PostgreSQL does; rounding up to 24:00:00 is refused
    (psycopg cannot read it back)."""
    metadata = sa.MetaData()
    tables = _time_tables(metadata)
    values = ["12:00:00.5", "12:00:00.4999", _T(12, 0, 0, 500000), "23:59:59.6", "23:59:59.4"]
    with store(pg_database(), metadata) as engine:
        found = outcomes(engine, tables[0], "p0", values)
    assert problems(found) == []
    assert read_back(found) == {
        "'12:00:00.5'": _T(12, 0, 1),
        "'12:00:00.4999'": _T(12),
        repr(_T(12, 0, 0, 500000)): _T(12, 0, 1),
        "'23:59:59.4'": _T(23, 59, 59),
    }
    assert "psycopg cannot read it back" in refused(found)["'23:59:59.6'"]


_INTERVALS: list[tuple[Any, Any]] = [
    ("1 day", _D(days=1)),
    ("01:00:00", _D(hours=1)),
    ("1 month", _D(days=30)),  # psycopg reads a month as 30 days
    ("1 year", _D(days=365)),  # and a year as 365
    ("1.5 days", _D(days=1, hours=12)),
    ("1.5 months", _D(days=45)),
    ("0.7 years", _D(days=240)),  # 8 months: fractions of years are rounded to months
    ("1.5 weeks", _D(days=10, hours=12)),
    ("1 day -1 hour", _D(hours=23)),
    ("-100 hours", _D(hours=-100)),
    ("P1Y2M3DT4H5M6.5S", _D(days=428, hours=4, minutes=5, seconds=6.5)),
    ("@ 1 hour ago", _D(hours=-1)),
    ("1:2.5", _D(seconds=62.5)),  # M:SS.f
    ("5", _D(seconds=5)),
    ("1 01:00", _D(days=1, hours=1)),
    ("1.5 microseconds", _D(microseconds=1)),  # rounded half towards zero, as PostgreSQL
    ("1h 30m", _D(hours=1, minutes=30)),
    ("1-2", _D(days=425)),  # SQL's years-months
    ("1 mon -30 days", _D(0)),
    ("2739726 years 1 day", _D(days=999999991)),
    (_D(days=1, hours=1), _D(days=1, hours=1)),
    (_D(seconds=-1), _D(seconds=-1)),
    (_D.max, _D.max),
    (_D.min, _D.min),
    (_T(1, 30), _D(hours=1, minutes=30)),
    # Refused where PostgreSQL refuses it (at the flush)...
    ("abc", R),
    ("infinity", R),
    ("1 day 2 days", R),
    ("1 qtr", R),
    ("1:60", R),
    (_T(1, tzinfo=datetime.UTC), R),
    (5, R),
    (1.5, R),
    (datetime.date(2024, 1, 1), R),
    # ... or stores but psycopg cannot read back, or reads wrapped around 32 bits.
    ("1000000000 days", R),
    ("5883516 years", R),
    ("11767033 years", R),  # read back as -251 days
    ("178956970 years", R),
    ("1 day ago 1 hour", R),  # PostgreSQL 16 and later refuse 'ago' before the end
]


def _interval_tables(metadata: sa.MetaData) -> list[sa.Table]:
    def columns() -> list[sa.Column[Any]]:
        return [
            sa.Column("id", sa.Text, primary_key=True),
            sa.Column("i", sa.Interval),
            sa.Column("p0", sa.Interval(second_precision=0)),
            sa.Column("dm", postgresql.INTERVAL(fields="DAY TO MINUTE")),
            sa.Column("y", postgresql.INTERVAL(fields="YEAR")),
        ]

    plain = sa.Table("span_plain", metadata, *columns())
    mixed = sa.Table("span_mixed", metadata, *columns(), sa.Column("doc", sa.JSON))
    return [plain, mixed]


def test_interval_values_read_in_their_batch_as_psycopg_reads_them_back_or_are_refused(
    pg_database: Callable[[], str],
) -> None:
    """``'1 month'`` was read as written in its batch and as 30 days later; ``'11767033
    years'`` was stored and read back as -251 days, ``'1000000000 days'`` stored and never
    read back; the fields and precision of a column cut and round what it keeps."""
    metadata = sa.MetaData()
    tables = _interval_tables(metadata)
    values = [value for value, _ in _INTERVALS]
    with store(pg_database(), metadata) as engine:
        found = {
            (table.name, column): outcomes(engine, table, column, values)
            for table in tables
            for column in ("i", "p0", "dm", "y")
        }
    assert {key: problems(each) for key, each in found.items() if problems(each)} == {}
    for table in ("span_plain", "span_mixed"):
        each = found[(table, "i")]
        assert read_back(each) == {repr(v): want for v, want in _INTERVALS if want is not R}
        assert set(refused(each)) == {repr(v) for v, want in _INTERVALS if want is R}
        assert "psycopg cannot read it back" in refused(each)["'11767033 years'"]
        rounded = read_back(found[(table, "p0")])
        assert rounded["'P1Y2M3DT4H5M6.5S'"] == _D(days=428, hours=4, minutes=5, seconds=7)
        assert rounded["'1.5 microseconds'"] == _D(0)
        # Rounded up to 1,000,000,000 days: past what psycopg reads.
        assert "psycopg cannot read it back" in refused(found[(table, "p0")])[repr(_D.max)]
        minutes = read_back(found[(table, "dm")])
        assert minutes["'P1Y2M3DT4H5M6.5S'"] == _D(days=428, hours=4, minutes=5)
        assert minutes[repr(_D(seconds=-1))] == _D(minutes=-1)  # -1 day +23:59:59, cut
        assert "PostgreSQL versions read a number" in refused(found[(table, "dm")])["'5'"]
        # An INTERVAL YEAR column keeps 365 days of '1 year' as 0: what is written is the
        # timedelta read back, refused where the column would keep another value.
        years = found[(table, "y")]
        assert read_back(years)["'1000000000 days'"] == _D(0)
        assert "INTERVAL YEAR column would keep less of it" in refused(years)["'1 year'"]


def _interval_texts() -> list[str]:
    """Interval text of many shapes: units, fractions, signs, times, 'ago', ISO 8601."""
    numbers = ["1", "-1", "+2", "1.5", ".5", "1.", "0.7", "-0.5", "2147483648", "1-2"]
    units = ["us", "msec", "s", "secs", "m", "min", "h", "hrs", "d", "day", "w", "weeks"]
    units += ["mon", "months", "y", "years", "decade", "c", "mil", "qtr", "foo"]
    texts = [f"{n} {u}" for n, u in itertools.product(numbers, units)]
    texts += [f"{n}{u}" for n, u in itertools.product(numbers[:4], units)]
    phrases = ["1 day", "2 hours", "1.5 days", "-3 mins", "5", "01:00", "1 mon", "0.7 years"]
    texts += [f"{a} {b}" for a, b in itertools.product(phrases, repeat=2)]
    texts += [f"{a} ago" for a in phrases] + [f"@ {a}" for a in phrases]
    texts += ["1:2", "-01:02:03.5", "+1:00", "100:00:00", "1:2:60", "1:2:3.9999999", "1 -1:00"]
    texts += ["P1D", "PT1.5H", "P1.5Y", "P-1W", "PT", "P1", "P1Y1Y", "P0002-06-07", "p1d"]
    texts += ["1d2h", "1day2hours", "1 day, 2 hours", "01:00 1.5 days", "1.5 days 01:00"]
    return texts


def test_interval_text_of_every_shape_is_read_in_its_batch_as_later_or_refused(
    pg_database: Callable[[], str],
) -> None:
    """Each text is refused by the upsert or read alike in its batch and after: the upsert
    reads interval text as PostgreSQL's ``interval_in`` does (about 400 shapes; the
    property is that none is stored otherwise, or refused only at the flush)."""
    metadata = sa.MetaData()
    table = _interval_tables(metadata)[0]
    texts = _interval_texts()
    with store(pg_database(), metadata) as engine:
        found = outcomes(engine, table, "i", texts)
    assert problems(found) == []
    assert len(read_back(found)) > len(texts) * 0.6  # not everything refused


@pytest.mark.parametrize("kind", ["time", "interval"])
def test_sqlite_time_and_interval_columns_read_in_their_batch_as_later(
    kind: str, sqlite_database: Callable[[], str]
) -> None:
    """SQLAlchemy stores a ``time`` (its offset dropped) or a ``timedelta`` (as 1970-01-01
    plus it); text and other values failed at the flush, a ``timedelta`` past year 9999 too
    (OverflowError, retried as a handler failure)."""
    metadata = sa.MetaData()
    column_type = sa.Time(timezone=True) if kind == "time" else sa.Interval()
    table = sa.Table(
        "clock_on_sqlite",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("v", column_type),
    )
    if kind == "time":
        values = [_T(12, 0, 0, 5), _T(12, tzinfo=_tz(2)), _T(12, tzinfo=_PARIS), "12:00", 5]
        expected = {repr(values[0]): values[0], repr(values[1]): _T(12), repr(values[2]): _T(12)}
    else:
        values = [_D(days=1, microseconds=5), _D(days=-3), _D.max, "1 day", _T(1), 5]
        expected = {repr(values[0]): values[0], repr(values[1]): values[1]}
    with store(sqlite_database(), metadata) as engine:
        found = outcomes(engine, table, "v", values)
    assert problems(found) == []
    assert read_back(found) == expected
    assert set(refused(found)) == {repr(v) for v in values} - set(expected)
