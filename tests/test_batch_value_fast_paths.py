"""Values already of the kind a column stores skip their conversion in ``tx.upsert`` and
``tx.get`` (a datetime in the session's own time zone, a ``Decimal`` at the column's scale,
a key of its column's type): each such shortcut must still read back in its batch exactly
(``repr``: time zone object, offset and ``fold`` included) what a later batch reads.

The values are built on the session's own time zone object (the one psycopg reads times
into), and beside it on equal zones that are other objects, at DST changes and near years 1
and 9999, where a shortcut could keep a value the database stores otherwise.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from outbox.db import create_engine
from projections.api import UnstorableValueError
from projections.sql_tx import SqlTx

metadata = sa.MetaData()
values = sa.Table(
    "fast_path_values",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True)),
    sa.Column("cents", sa.Numeric(5, 2)),
    sa.Column("whole", sa.Numeric(5)),
)
lines = sa.Table(
    "fast_path_lines",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("line", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("big", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("title", sa.Text),
)


@pytest.fixture
def engine_in(pg_database: Callable[[], str]) -> Iterator[Callable[[str], sa.Engine]]:
    """``engine_in(zone)``: an engine on a fresh database whose sessions are in ``zone``."""
    engines: list[sa.Engine] = []

    def make(zone: str) -> sa.Engine:
        engine = create_engine(pg_database())
        with engine.connect() as conn:
            name = engine.url.database
            conn.exec_driver_sql(f"ALTER DATABASE \"{name}\" SET timezone = '{zone}'")
            conn.commit()
        engine.dispose()
        metadata.create_all(engine)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


def _session_zone(engine: sa.Engine) -> datetime.tzinfo:
    with engine.connect() as conn:
        return conn.connection.driver_connection.info.timezone  # type: ignore[union-attr,no-any-return]


def _differences(engine: sa.Engine, column: str, written: list[Any]) -> tuple[list[Any], int]:
    """Each value written into ``column``, read in its batch and in a later one, where the
    two differ; and how many values the upsert refused (naming the column)."""
    differ, refused = [], 0
    for n, value in enumerate(written):
        key = f"{column}-{n}"
        try:
            with engine.begin() as conn:
                tx = SqlTx(conn, {values: values})
                # Every column written: a row of some columns is read from the database.
                tx.upsert(
                    values, {**dict.fromkeys(c.name for c in values.c), "id": key, column: value}
                )
                in_batch = tx.get(values, key)
                tx.flush()
        except UnstorableValueError as exc:
            assert str(exc).startswith(f"{values.name}.{column} cannot hold ")
            refused += 1
            continue
        with engine.begin() as conn:
            later = SqlTx(conn, {values: values}).get(values, key)
        assert in_batch is not None and later is not None
        if repr(in_batch[column]) != repr(later[column]):
            differ.append((n, value, in_batch[column], later[column]))
    return differ, refused


def _times(zone: datetime.tzinfo) -> list[datetime.datetime]:
    """Times on the session's zone object: ordinary, with ``fold=1`` where nothing happens
    twice, twice (DST ends in Paris), never (DST starts), near years 1 and 9999."""
    at = datetime.datetime
    return [
        at(2024, 5, 1, 10, 0, 0, 123456, tzinfo=zone),
        at(2024, 5, 1, 10, 0, 0, 123456, tzinfo=zone, fold=1),
        at(2024, 10, 27, 2, 30, tzinfo=zone),
        at(2024, 10, 27, 2, 30, tzinfo=zone, fold=1),
        at(2024, 3, 31, 2, 30, tzinfo=zone),
        at(2, 1, 1, 12, tzinfo=zone),
        at(1, 1, 1, 0, 0, 1, tzinfo=zone),
        at(1, 1, 1, 23, tzinfo=zone),
        at(1, 1, 1, 12, tzinfo=zone, fold=1),
        at(1, 12, 31, 23, 59, tzinfo=zone, fold=1),
        at(9998, 12, 31, 12, tzinfo=zone),
        at(9999, 12, 31, 1, tzinfo=zone),
        at(9999, 12, 31, 23, 59, tzinfo=zone),
        at(9999, 1, 1, tzinfo=zone, fold=1),
        at(9999, 12, 31, 23, 59, 59, 999999, tzinfo=zone, fold=1),
    ]


def _other_zones(moment: datetime.datetime) -> list[datetime.datetime]:
    """``moment`` in zones equal to common session zones that are other objects."""
    zones: list[datetime.tzinfo] = [
        datetime.UTC,
        datetime.timezone(datetime.timedelta(0)),
        datetime.timezone(datetime.timedelta(hours=14)),
        ZoneInfo("UTC"),
        ZoneInfo("Etc/UTC"),
        ZoneInfo("Etc/GMT-14"),
        ZoneInfo("Europe/Paris"),
        ZoneInfo.no_cache("Etc/UTC"),
        ZoneInfo.no_cache("Europe/Paris"),
    ]
    paris = ZoneInfo.no_cache("Europe/Paris")
    twice, never = moment.replace(month=10, day=27, hour=2), moment.replace(hour=2)
    return [moment.astimezone(zone) for zone in zones] + [
        wall.replace(tzinfo=paris, fold=fold) for fold in (0, 1) for wall in (twice, never)
    ]


@pytest.mark.parametrize("zone", ["UTC", "Etc/UTC", "Etc/GMT-14", "Europe/Paris"])
def test_a_time_in_the_session_zone_or_an_equal_one_reads_in_its_batch_as_later(
    zone: str, engine_in: Callable[[str], sa.Engine]
) -> None:
    """A time already on the session's zone object is kept as it is only where the database
    stores it so: ``fold=1`` (psycopg reads ``fold=0``; a UTC session kept it), a wall time
    that does not exist or happens twice (DST), years 1 and 9999 (read with a fixed offset
    where UTC is out of range) are converted; equal zones that are other objects are."""
    engine = engine_in(zone)
    session_zone = _session_zone(engine)
    written = _times(session_zone) + _other_zones(
        datetime.datetime(2024, 3, 31, 10, 30, 15, 250, tzinfo=datetime.UTC)
    )
    differ, refused = _differences(engine, "at", written)
    assert differ == [], "\n".join(map(repr, differ))
    assert refused <= 2  # only near years 1 and 9999, where psycopg cannot read some back


_CENTS: list[Any] = [
    Decimal("1.50"),
    Decimal("999.99"),
    Decimal("-999.99"),
    Decimal("0.00"),
    Decimal("-0.00"),  # stored as 0.00
    Decimal("0E-2"),
    Decimal("-0E-2"),
    Decimal("1.5"),
    Decimal("1.505"),
    Decimal("999.994"),
    Decimal("1E+2"),
    Decimal("NaN"),
]
_CENTS_REFUSED: list[Any] = [
    Decimal("-NaN"),  # PostgreSQL refuses it as psycopg sends it ('-NaN')
    Decimal("999.995"),  # 1000.00 once rounded
    Decimal("1000.00"),
    Decimal("-1000.00"),
    Decimal("Infinity"),
]
_WHOLE: list[Any] = [
    Decimal("12345"),
    Decimal("-99999"),
    Decimal("0"),
    Decimal("-0"),
    Decimal("5.5"),
    Decimal("1E+2"),
    Decimal("1E+4"),
]
_WHOLE_REFUSED: list[Any] = [Decimal("100000"), Decimal("99999.5"), Decimal("1E+5")]


@pytest.mark.parametrize(
    ("column", "kept", "refused"),
    [("cents", _CENTS, _CENTS_REFUSED), ("whole", _WHOLE, _WHOLE_REFUSED)],
)
def test_a_decimal_at_the_columns_scale_reads_in_its_batch_as_later(
    column: str, kept: list[Any], refused: list[Any], engine_in: Callable[[str], sa.Engine]
) -> None:
    """A ``Decimal`` already at a ``NUMERIC(p, s)`` column's scale is kept as it is, but for
    ``-0.00`` (stored as ``0.00``) and what needs more than ``p - s`` digits before the
    point (refused as PostgreSQL refuses it)."""
    engine = engine_in("UTC")
    differ, refusals = _differences(engine, column, kept + refused)
    assert differ == [], "\n".join(map(repr, differ))
    assert refusals == len(refused)


def test_a_key_of_its_columns_types_or_another_finds_the_row_in_its_batch_as_later(
    engine_in: Callable[[str], sa.Engine],
) -> None:
    """A composite key (text, integer, bigint) written and looked up as its columns' types
    or as text, in either order: each form finds the row in its batch as later."""
    engine = engine_in("UTC")
    forms = [("o1", 2, 7), ("o1", "2", "7"), ("o1", " 2 ", 7), ("o1", 2.0, "+7")]
    for n, written in enumerate(forms):
        order = f"o{n}"
        row = {"order_id": order, "line": written[1], "big": written[2], "title": repr(written)}
        with engine.begin() as conn:
            tx = SqlTx(conn, {lines: lines})
            tx.upsert(lines, row)
            in_batch = [tx.get(lines, (order, *form[1:])) for form in forms]
            tx.flush()
        with engine.begin() as conn:
            tx = SqlTx(conn, {lines: lines})
            later = [tx.get(lines, (order, *form[1:])) for form in forms]
        expected = {"order_id": order, "line": 2, "big": 7, "title": repr(written)}
        assert in_batch == [expected] * len(forms)
        assert later == in_batch
