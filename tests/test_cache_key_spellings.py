"""A cached get of one row by different spellings of its key: each spelling the database
finds the row by must read the new value once an event of the row is applied (the tags of
its entry and of the event meet), spellings of one key share one entry, and a hit does not
work out the entry's tags (only a miss stores them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from projections import Queries
from tests import spelled_key_fixtures as fixtures
from tests.cache_helpers import append, cached_runtime, redis_keys

_PLUS_TWO = timezone(timedelta(hours=2))
_BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def spelled(store_url: str, make_settings: Callable[..., Any]) -> Iterator[tuple[Any, Queries]]:
    with cached_runtime(store_url, make_settings, "tests.spelled_key_fixtures") as opened:
        yield opened


def _apply(runtime: Any, kind: str, aggregate_id: str, value: str) -> None:
    append(runtime.log, "keys", [(kind, aggregate_id, "ValueSet", {"value": value})])
    assert runtime.engine.catch_up(["spelled_keys"]) == 1


def _read(queries: Queries, table: str, key: Any) -> Any:
    row = queries.get("spelled_keys", key, table=table).value
    return None if row is None else row["value"]


def _entries(runtime: Any, table: str) -> list[bytes]:
    return redis_keys(f"{runtime.engine.cache.prefix}e:spelled_keys:get:{table}:")


def test_numeric_key_spellings_share_one_entry_and_all_see_a_write(
    spelled: tuple[Any, Queries],
) -> None:
    runtime, queries = spelled
    spellings: list[Any] = [45, 45.0, Decimal("45.00"), Decimal("45"), "45", "45.000"]
    for aggregate_id in ("45", "45.00"):
        _apply(runtime, "number", aggregate_id, "v1")
        assert [_read(queries, "n_number", key) for key in spellings] == ["v1"] * len(spellings)
        assert len(_entries(runtime, "n_number")) == 1, _entries(runtime, "n_number")
        _apply(runtime, "number", aggregate_id, "v2")
        assert [_read(queries, "n_number", key) for key in spellings] == ["v2"] * len(spellings)
    _apply(runtime, "number", "1.5", "v1")
    fraction: list[Any] = [1.5, Decimal("1.50"), "1.5", "1.500"]
    assert [_read(queries, "n_number", key) for key in fraction] == ["v1"] * len(fraction)
    assert len(_entries(runtime, "n_number")) == 2  # 45's, 1.5's


def test_a_float_key_of_a_numeric_row_sees_a_write(spelled: tuple[Any, Queries]) -> None:
    """The row of the exact value of the double 0.1: PostgreSQL compared a float key as a
    double (finding it by ``0.1``), SQLite stores a NUMERIC as a double (so does every
    spelling of 0.1); each get that finds it must see the event of its aggregate."""
    runtime, queries = spelled
    exact = "0.1000000000000000055511151231257827021181583404541015625"
    spellings: list[Any] = [0.1, "0.1", Decimal("0.1"), exact, Decimal(exact)]
    _apply(runtime, "number", exact, "v1")
    found = [key for key in spellings if _read(queries, "n_number", key) == "v1"]
    assert Decimal(exact) in found
    _apply(runtime, "number", exact, "v2")
    stale = [key for key in found if _read(queries, "n_number", key) != "v2"]
    assert stale == []


def _moment_spellings(stored: datetime) -> list[Any]:
    """Spellings of a naive key: as it is, as text, and aware: in UTC, of the same wall time
    at +02:00, of the same instant (taking naive as UTC) at +02:00."""
    same_wall = stored.replace(tzinfo=_PLUS_TWO)
    same_instant = stored.replace(tzinfo=UTC).astimezone(_PLUS_TWO)
    aware = [stored.replace(tzinfo=UTC), same_wall, same_instant]
    return [stored, stored.isoformat(), *aware, *(moment.isoformat() for moment in aware)]


@pytest.mark.parametrize(
    "aggregate_id",
    ["2024-05-01T12:00:00+02:00", "2024-05-02T10:00:00", "2024-05-03T10:00:00Z"],
)
def test_every_spelling_that_finds_a_naive_timestamp_row_sees_a_write(
    spelled: tuple[Any, Queries], aggregate_id: str
) -> None:
    """SQLite stores an aware value's wall time in a naive column and compares a key so; a
    get by any spelling that finds the row must not stay stale after an event of the row."""
    runtime, queries = spelled
    _apply(runtime, "moment", aggregate_id, "v1")
    (row,) = queries.list("spelled_keys", table="n_moment").rows
    spellings = _moment_spellings(datetime.fromisoformat(row["id"]))
    found = [key for key in spellings if _read(queries, "n_moment", key) == "v1"]
    assert found and all(_read(queries, "n_moment", key) == "v1" for key in found)  # cached
    _apply(runtime, "moment", aggregate_id, "v2")
    stale = [key for key in found if _read(queries, "n_moment", key) != "v2"]
    assert stale == []


def test_a_sqlite_naive_timestamp_key_and_its_wall_time_share_one_entry(
    database_for: Callable[[str], str], make_settings: Callable[..., Any]
) -> None:
    with cached_runtime(database_for("sqlite"), make_settings, "tests.spelled_key_fixtures") as (
        runtime,
        queries,
    ):
        _apply(runtime, "moment", "2024-05-01T10:00:00", "v1")
        keys = [datetime(2024, 5, 1, 10), datetime(2024, 5, 1, 10, tzinfo=_PLUS_TWO)]
        keys += ["2024-05-01T10:00:00+02:00", "2024-05-01 10:00:00"]
        assert [_read(queries, "n_moment", key) for key in keys] == ["v1"] * len(keys)
        assert len(_entries(runtime, "n_moment")) == 1, _entries(runtime, "n_moment")


@pytest.fixture
def berlin(
    database_for: Callable[[str], str], make_settings: Callable[..., Any]
) -> Iterator[tuple[Any, Queries]]:
    """A cached runtime on a PostgreSQL database whose sessions' ``TimeZone`` is
    Europe/Berlin (+02:00 in May): a ``timestamp`` column stores an aware value's wall time
    there, a ``timestamptz`` one takes a naive value there."""
    url = database_for("postgresql")
    admin = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"))
    with admin.begin() as conn:
        name = conn.exec_driver_sql("SELECT current_database()").scalar_one()
        conn.exec_driver_sql(f"ALTER DATABASE \"{name}\" SET timezone TO 'Europe/Berlin'")
    admin.dispose()
    with cached_runtime(url, make_settings, "tests.spelled_key_fixtures") as opened:
        yield opened


def _zoned_spellings(stored: datetime) -> list[Any]:
    """Spellings of a key: as the row holds it, naive (its Berlin wall time), and aware (in
    UTC, at +02:00, in Berlin), each as it is and as text."""
    wall = stored.astimezone(_BERLIN).replace(tzinfo=None) if stored.tzinfo else stored
    aware = [wall.replace(tzinfo=_BERLIN), wall.replace(tzinfo=_BERLIN).astimezone(UTC)]
    aware += [wall.replace(tzinfo=_PLUS_TWO), wall.replace(tzinfo=UTC)]
    moments = [stored, wall, *aware]
    return [*moments, *(moment.isoformat() for moment in moments)]


@pytest.mark.parametrize("kind", ["moment", "instant"])
@pytest.mark.parametrize(
    "aggregate_id",
    [
        "2024-05-01T12:00:00+02:00",
        "2024-05-02T10:00:00Z",
        "2024-05-03T10:00:00",
        "2024-10-27T01:30:00Z",  # 02:30+01:00 in Berlin, the second 02:30 of the day
        "2024-10-27T02:30:00",  # twice in Berlin
    ],
)
def test_every_spelling_that_finds_a_row_on_a_session_out_of_utc_sees_a_write(
    berlin: tuple[Any, Queries], kind: str, aggregate_id: str
) -> None:
    """PostgreSQL in Europe/Berlin: a ``timestamp`` row holds an aware id's Berlin wall time
    (``...10:00Z`` is the row 12:00), a ``timestamptz`` one a naive id taken in Berlin
    (``...10:00`` is 08:00 UTC); every spelling of a key that finds the row must read the
    update after its event."""
    runtime, queries = berlin
    table = f"n_{kind}"
    _apply(runtime, kind, aggregate_id, "v1")
    (row,) = queries.list("spelled_keys", table=table).rows
    spellings = _zoned_spellings(datetime.fromisoformat(row["id"]))
    found = [key for key in spellings if _read(queries, table, key) == "v1"]
    assert len(found) >= 4, found
    assert all(_read(queries, table, key) == "v1" for key in found)  # cached
    _apply(runtime, kind, aggregate_id, "v2")
    stale = [key for key in found if _read(queries, table, key) != "v2"]
    assert stale == []


def test_a_hit_does_not_work_out_the_tags_of_its_entry(spelled: tuple[Any, Queries]) -> None:
    runtime, queries = spelled
    _apply(runtime, "counted", "c-1", "v1")
    fixtures.TAG_CALLS.clear()
    assert [_read(queries, "n_counted", "c-1") for _ in range(3)] == ["v1"] * 3
    assert fixtures.TAG_CALLS == [{"id": "c-1"}]  # the miss's, none of the two hits'
    _apply(runtime, "counted", "c-1", "v2")
    assert _read(queries, "n_counted", "c-1") == "v2"
    assert len(fixtures.TAG_CALLS) == 2


def test_a_query_hit_does_not_work_out_its_argument_tags(spelled: tuple[Any, Queries]) -> None:
    runtime, queries = spelled
    _apply(runtime, "counted", "c-2", "v1")
    fixtures.TAG_CALLS.clear()
    values = [queries.run("spelled_keys", "counted", "c-2").value["value"] for _ in range(3)]
    assert values == ["v1"] * 3
    assert fixtures.TAG_CALLS == [{"id": "c-2"}]  # the miss's, none of the two hits'
    _apply(runtime, "counted", "c-2", "v2")
    assert queries.run("spelled_keys", "counted", "c-2").value["value"] == "v2"
