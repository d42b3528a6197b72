"""A ``datetime.time`` or ``timedelta`` written to a text column is kept as the text
PostgreSQL stores of it (``time_out``, ``timetz_out``, ``interval_out`` in the default
``IntervalStyle`` postgres), on both stores: PostgreSQL stored that text while the batch read
the ``time`` back; SQLite failed the flush (sqlite3 binds neither), failing the whole batch."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from tests.batch_value_helpers import outcomes, problems, read_back, refused, store

# Each text as PostgreSQL stored it (read back from the server).
_STORED: dict[Any, str] = {
    time(1, 2): "01:02:00",
    time(1, 2, 3, 500): "01:02:03.0005",
    time(23, 59, 59, 999999): "23:59:59.999999",
    time(0): "00:00:00",
    time(12, tzinfo=timezone(timedelta(hours=5, minutes=30))): "12:00:00+05:30",
    time(12, 0, 1, tzinfo=timezone(-timedelta(hours=3))): "12:00:01-03",
    time(12, tzinfo=UTC): "12:00:00+00",
    time(12, tzinfo=timezone(timedelta(hours=1, seconds=5))): "12:00:00+01:00:05",
    timedelta(0): "00:00:00",
    timedelta(microseconds=1): "00:00:00.000001",
    timedelta(seconds=-5): "-1 days +23:59:55",
    timedelta(days=1, hours=2): "1 day 02:00:00",
    timedelta(days=2): "2 days",
    timedelta(days=-1): "-1 days",
    timedelta(days=-3, hours=1, microseconds=10): "-3 days +01:00:00.00001",
    timedelta.max: "999999999 days 23:59:59.999999",
    timedelta.min: "-999999999 days",
}
_REFUSED: list[Any] = [
    time(12, tzinfo=ZoneInfo("Europe/Paris")),  # psycopg sends no time of a zone
    time(12, tzinfo=timezone(timedelta(hours=16))),  # PostgreSQL takes no such offset
]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_time_or_timedelta_in_a_text_column_is_the_text_postgresql_stores(
    kind: str, database_for: Callable[[str], str]
) -> None:
    metadata = sa.MetaData()
    table = sa.Table(
        "clock_texts",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("t", sa.Text),
        sa.Column("v", sa.String(40)),
    )
    values = [*_STORED, *_REFUSED]
    with store(database_for(kind), metadata) as engine:
        found = {column: outcomes(engine, table, column, values) for column in "tv"}
    assert {column: problems(each) for column, each in found.items() if problems(each)} == {}
    for column, each in found.items():
        assert read_back(each) == {repr(value): text for value, text in _STORED.items()}, column
        assert set(refused(each)) == set(map(repr, _REFUSED)), column
