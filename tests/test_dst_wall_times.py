"""Wall times that happen twice (DST ends) or never (DST starts) in a PostgreSQL session's
time zone, written by readmodel on each of its write paths (upserts from one JSON document,
from arrays, SQLAlchemy's statements, a rebuild's COPY of new rows): stored as the server
stores the same value written by plain SQL, and seen so by a get in the batch and by queries.

PostgreSQL 15 reads such a wall time as the later of the instants it may name (``fold`` is
not sent): 02:30 on 2024-10-27 in Berlin is 02:30+01:00 (01:30 UTC), the second one;
02:30 on 2024-03-31 is taken at the offset before the change (01:30 UTC, read 03:30+02:00).
readmodel took the first 02:30 (+02:00): its own writes stored another instant than a raw
write, and a query filtering on the naive value missed the row a get by it found.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from outbox.db import create_engine
from projections.query_reader import SqlReader
from projections.sql_tx import SqlTx
from projections.sql_writes import NewRows

# zone -> (a wall time that happens twice, one that never happens), as ISO text
_ZONES = {
    "Europe/Berlin": ("2024-10-27 02:30", "2024-03-31 02:30"),
    "America/New_York": ("2024-11-03 01:30", "2024-03-10 02:30"),
}
# zone -> the repeated wall time as the server stores it (the later instant)
_LATER = {
    "Europe/Berlin": "2024-10-27T02:30:00+01:00",
    "America/New_York": "2024-11-03T01:30:00-05:00",
}


def _values(zone: str) -> list[Any]:
    twice, never = _ZONES[zone]
    wall, gap = datetime.fromisoformat(twice), datetime.fromisoformat(never)
    return [
        wall,
        wall.replace(fold=1),
        twice,
        twice.replace(" ", "T") + ":00.000001",
        f"{twice} {zone}",
        f"{twice} {zone.upper()}",
        gap,
        never,
        f"{never} {zone}",
        wall.replace(tzinfo=ZoneInfo(zone)),  # aware: psycopg sends its offset, fold=0's
        wall.replace(tzinfo=ZoneInfo(zone), fold=1),
    ]


_metadata = sa.MetaData()


def _table(name: str, *extra: sa.Column[Any]) -> sa.Table:
    return sa.Table(
        name,
        _metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("at", sa.DateTime(timezone=True)),
        sa.Column("wall", sa.DateTime),
        *extra,
    )


_TABLES = {
    "json": _table("dst_json"),  # COPYed as new rows by a rebuild, else upserted from JSON
    "arrays": _table("dst_arrays", sa.Column("ratio", sa.Float)),
    "statements": _table("dst_statements", sa.Column("doc", sa.JSON)),
}
_RAW = _table("dst_raw")


def _clocks(name: str) -> sa.Table:
    return sa.Table(
        name,
        _metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("clock", sa.Time(timezone=True)),
    )


_CLOCKS, _RAW_CLOCKS = _clocks("dst_clocks"), _clocks("dst_raw_clocks")
_KEYED = sa.Table(
    "dst_keyed",
    _metadata,
    sa.Column("at", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("label", sa.Text),
)
_ALL = {t: t for t in _metadata.sorted_tables}


@pytest.fixture(params=sorted(_ZONES))
def zoned(request: pytest.FixtureRequest, pg_database: Callable[[], str]) -> Iterator[Any]:
    """``(engine, zone)``: a fresh database whose sessions' ``TimeZone`` is ``zone``."""
    zone = request.param
    engine = create_engine(pg_database())
    with engine.begin() as conn:
        name = conn.exec_driver_sql("SELECT current_database()").scalar_one()
        conn.exec_driver_sql(f"ALTER DATABASE \"{name}\" SET timezone TO '{zone}'")
    engine.dispose()
    _metadata.create_all(engine)
    try:
        yield engine, zone
    finally:
        engine.dispose()


def _shown(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def _rows(conn: sa.Connection, table: sa.Table, column: str) -> list[str | None]:
    rows = conn.execute(sa.select(table.c.id, table.c[column]).order_by(table.c.id))
    return [_shown(value) for _, value in rows]


def _raw(engine: sa.Engine, table: sa.Table, columns: list[str], values: list[Any]) -> None:
    """Each value written into ``columns`` by plain SQL: psycopg's own parameters."""
    names = ", ".join(columns)
    marks = ", ".join(["%s"] * len(columns))
    with engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        for i, value in enumerate(values):
            cursor.execute(
                f"INSERT INTO {table.name} (id, {names}) VALUES (%s, {marks})",
                (i, *[value] * len(columns)),
            )


@pytest.mark.parametrize("path", ["json", "copy", "arrays", "statements"])
def test_a_wall_time_is_stored_as_a_raw_write_stores_it(zoned: Any, path: str) -> None:
    """Into ``timestamptz`` and ``timestamp`` columns, by each write path (``copy``: a
    rebuild's COPY of new rows; the others upserts), as a naive datetime, ISO text (with a
    zone name too) and aware datetimes: stored, and seen by a get in the batch, as psycopg's
    plain ``INSERT`` of the same value stores it."""
    engine, zone = zoned
    values = _values(zone)
    table = _TABLES["json" if path == "copy" else path]
    new_rows = NewRows() if path == "copy" else None
    with engine.begin() as conn:
        tx = SqlTx(conn, _ALL, new_rows=new_rows)
        for i, value in enumerate(values):
            tx.upsert(table, {"id": i, "at": value, "wall": value})
        in_batch = [tx.get(table, i) for i in range(len(values))]
        tx.flush()
    _raw(engine, _RAW, ["at", "wall"], values)
    with engine.connect() as conn:
        assert _rows(conn, table, "at")[0] == _LATER[zone]
        for column in ("at", "wall"):
            raw = _rows(conn, _RAW, column)
            stored = _rows(conn, table, column)
            seen = [_shown(row[column]) for row in in_batch]  # type: ignore[index]
            shown = [repr(v) for v in values]
            assert list(zip(shown, stored, strict=True)) == list(zip(shown, raw, strict=True))
            assert list(zip(shown, seen, strict=True)) == list(zip(shown, raw, strict=True))
    if new_rows is not None:
        assert new_rows.existing_found == set()


def test_a_time_with_a_date_is_stored_as_a_raw_write_stores_it(zoned: Any) -> None:
    """A ``timetz`` column takes the session's offset at the date the text names."""
    engine, zone = zoned
    texts = [v for v in _values(zone) if type(v) is str and v.count(" ") == 1]
    with engine.begin() as conn:
        tx = SqlTx(conn, _ALL)
        for i, text in enumerate(texts):
            tx.upsert(_CLOCKS, {"id": i, "clock": text})
        rows = [tx.get(_CLOCKS, i) for i in range(len(texts))]
        in_batch = [_shown(row["clock"]) for row in rows]  # type: ignore[index]
        tx.flush()
    _raw(engine, _RAW_CLOCKS, ["clock"], texts)
    with engine.connect() as conn:
        stored = _rows(conn, _CLOCKS, "clock")
        raw = _rows(conn, _RAW_CLOCKS, "clock")
    assert list(zip(texts, stored, strict=True)) == list(zip(texts, raw, strict=True))
    assert list(zip(texts, in_batch, strict=True)) == list(zip(texts, raw, strict=True))


def test_a_query_on_a_wall_time_finds_the_row_written_with_it(zoned: Any) -> None:
    """A query's filter goes to the server as it is (naive), a get's key was converted by
    readmodel: ``first``/``find`` by the repeated wall time missed the row ``get`` found."""
    engine, zone = zoned
    twice, never = _ZONES[zone]
    with engine.begin() as conn:
        tx = SqlTx(conn, _ALL)
        tx.upsert(_KEYED, {"at": datetime.fromisoformat(twice), "label": "twice"})
        tx.upsert(_KEYED, {"at": never, "label": "never"})
        tx.flush()
    reader = SqlReader(engine, "dst", [_KEYED])
    for text in (twice, never):
        for key in (text, datetime.fromisoformat(text)):
            found = reader.get(_KEYED, key)
            assert found is not None, key
            assert reader.first(_KEYED, at=key) == found, key
            assert reader.find(_KEYED, at=key) == [found], key
