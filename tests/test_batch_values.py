"""Batch boundaries never change what a handler reads (DESIGN, projection model).

A row written earlier in the same batch is read back from memory; it must hold the values
the database will store (a ``NUMERIC(10, 2)`` rounded, an integer from a float rounded, a
numeric string parsed), as a read in a later batch would find them. Otherwise the result
depends on where batches fall, and a rebuild (big batches) differs from live (small ones).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from outbox.db import create_engine
from projections.api import Event, Projection, Tx, UnstorableValueError, on
from projections.replay import Replayer, ReplayOptions
from projections.sql_tx import SqlTx
from projections.sql_writes import RefusedWrite
from tests.batch_value_helpers import outcomes
from tests.projection_fixtures import engine_on, log_events

metadata = sa.MetaData()

money = sa.Table(
    "batch_money",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("amount", sa.Numeric(10, 2), nullable=False),
    sa.Column("units", sa.Integer, nullable=False),
    sa.Column("price", sa.Numeric(10, 2), nullable=False),
)


class Money(Projection):
    """Read-modify-write of values the columns convert: a product rounded to cents, a float
    into an integer column, a numeric string into a numeric column."""

    name = "batch_money"
    tables = (money,)

    @on("shop", "Scaled")
    def scaled(self, event: Event[dict], tx: Tx) -> None:
        row = tx.get(money, event.aggregate_id)
        if row is None:
            tx.upsert(
                money,
                {
                    "account": event.aggregate_id,
                    "amount": Decimal("0.40"),
                    "units": 1,
                    "price": "1.005",
                },
            )
            return
        tx.upsert(
            money,
            {
                "account": event.aggregate_id,
                "amount": row["amount"] * Decimal("1.125"),
                "units": row["units"] * 1.5,
                "price": Decimal(row["price"]) + Decimal("0.005"),
            },
        )


def _events() -> list[tuple[str, str, dict[str, Any]]]:
    return [(f"a{n % 3}", "Scaled", {}) for n in range(15)]


def _rows(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.select(money).order_by(money.c.account))]


def _live(url: str, batch_size: int) -> list[tuple[Any, ...]]:
    projection = Money()
    with engine_on(url, [projection], batch_size=batch_size, retry_backoff=0.001) as (
        log,
        store,
        engine,
    ):
        head = log_events(log, _events())
        engine.catch_up()
        assert engine.parked() == []
        assert store.checkpoints(projection.name) and engine.lagging() == []
        assert head == 15
        return _rows(log.engine)


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_one_event_per_batch_and_one_batch_of_all_give_the_same_rows(
    kind: str, database_for: Callable[[str], str]
) -> None:
    one_by_one = _live(database_for(kind), batch_size=1)
    all_at_once = _live(database_for(kind), batch_size=1000)
    assert all_at_once == one_by_one
    # Each event of an account: amount x 1.125 rounded to cents, units x 1.5 as stored.
    amount = Decimal("0.40")
    for _ in range(4):
        if kind == "postgresql":
            amount = (amount * Decimal("1.125")).quantize(Decimal("0.01"), "ROUND_HALF_UP")
        else:  # SQLite stores a float, SQLAlchemy reads it back with "%.2f"
            amount = Decimal(f"{float(amount * Decimal('1.125')):.2f}")
    # PostgreSQL rounds 1.5 and 4.5 half to even (2, 4); SQLite keeps a non-integral float.
    units = 6 if kind == "postgresql" else 1.5**4
    # "1.005" stored: 1.01 on PostgreSQL (half away from zero); SQLite formats the float
    # 1.00499999... as 1.00, and 1.00 + 0.005 again, each time.
    price = Decimal("1.05") if kind == "postgresql" else Decimal("1.00")
    assert one_by_one == [(f"a{n}", amount, units, price) for n in range(3)]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_rebuild_in_big_batches_equals_live_in_small_ones(
    kind: str, database_for: Callable[[str], str]
) -> None:
    projection = Money()
    with engine_on(database_for(kind), [projection], batch_size=2) as (log, store, engine):
        head = log_events(log, _events())
        engine.catch_up()
        live = _rows(log.engine)
        summary = Replayer(engine.reader, projection, store, batch_size=1000).run(ReplayOptions())
        assert summary.events == head
        assert _rows(log.engine) == live


values_metadata = sa.MetaData()
grid = sa.Table(  # every column converts some values; only "array" types (plain plan)
    "value_grid",
    values_metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("cents", sa.Numeric(10, 2)),
    sa.Column("whole", sa.Numeric(10)),
    sa.Column("free", sa.Numeric),
    sa.Column("count", sa.Integer),
    sa.Column("big", sa.BigInteger),
    sa.Column("ratio", sa.Float),
    sa.Column("code", sa.CHAR(5)),
)
grid_other = sa.Table(  # and types SQLAlchemy converts (statements through SQLAlchemy)
    "value_grid_other",
    values_metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("cents", sa.Numeric(10, 2)),
    sa.Column("cents_float", sa.Numeric(10, 2, asdecimal=False)),
    sa.Column("ratio_decimal", sa.Float(asdecimal=True)),
    sa.Column("single", sa.REAL),
    sa.Column("count", sa.Integer),
)

_VALUES: list[Any] = [
    Decimal("0.125"),
    Decimal("-0.125"),
    Decimal("-0.001"),
    Decimal("0.135"),
    Decimal("2.5"),
    Decimal("3.5"),
    Decimal("1E+2"),
    0.125,
    0.135,
    1.005,
    2.5,
    3.5,
    -2.5,
    3.0,
    0.1 + 0.2,
    7,
    "2.5",
    " 4 ",
    "7",
    "1e2",
    "3.0",
    "ab",
    True,
    None,
]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_value_read_in_its_own_batch_is_the_value_a_later_batch_reads(
    kind: str, database_for: Callable[[str], str]
) -> None:
    engine = create_engine(database_for(kind))
    values_metadata.create_all(engine)
    differ = []
    stored = 0
    try:
        for table in (grid, grid_other):
            columns = [c.name for c in table.columns if c.name != "id"]
            for column in columns:
                for n, value in enumerate(_VALUES):
                    if column == "code" and type(value) is not str:
                        continue  # text columns are given text (they convert no values)
                    key = f"{column}-{n}"
                    row = {"id": key, **dict.fromkeys(columns), column: value}
                    try:
                        with engine.begin() as conn:
                            tx = SqlTx(conn, {table: table})
                            tx.upsert(table, row)
                            in_batch = tx.get(table, key)
                            tx.flush()
                    except (RefusedWrite, UnstorableValueError, sa.exc.DBAPIError, psycopg.Error):
                        continue  # the database refuses the value: no later batch reads it
                    with engine.begin() as conn:
                        later = SqlTx(conn, {table: table}).get(table, key)
                    stored += 1
                    assert in_batch is not None and later is not None
                    if repr(in_batch[column]) != repr(later[column]):
                        differ.append((table.name, column, value, in_batch[column], later[column]))
    finally:
        engine.dispose()
    assert stored > 200
    assert differ == [], "\n".join(map(repr, differ))


other_metadata = sa.MetaData()
text_grid = sa.Table(  # text, booleans and datetimes: the driver-level plan on PostgreSQL
    "value_grid_text",
    other_metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("text", sa.Text),
    sa.Column("name", sa.String(40)),
    sa.Column("flag", sa.Boolean),
    sa.Column("at", sa.DateTime(timezone=True)),
    sa.Column("naive", sa.DateTime),
)
json_grid = sa.Table(  # JSON beside them: SQLAlchemy's statements
    "value_grid_json",
    other_metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("doc", sa.JSON),
    sa.Column("binary", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
    sa.Column("text", sa.String),
    sa.Column("flag", sa.Boolean),
    sa.Column("at", sa.DateTime(timezone=True)),
)

_PARIS = ZoneInfo("Europe/Paris")
_OTHER_VALUES: list[Any] = [
    5,
    -3,
    2**70,
    5.5,
    1.0,
    1e20,
    1.5e-7,
    1e-5,
    0.0001,
    1e15,
    123456789012345.6,
    -0.0,
    0.1 + 0.2,
    Decimal("5.50"),
    Decimal("1E+2"),
    True,
    False,
    0,
    1,
    2,
    "true",
    "FALSE",
    " t ",
    "yes",
    "off",
    "1",
    "0",
    "abc",
    "",
    "2026-01-02T03:04:05+01:00",
    "2026-01-02 03:04:05.5",
    "2026-01-02",
    "2026-07-02T03:04:05Z",
    datetime.datetime(2026, 1, 2, 3, 4, 5, 600),
    datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    datetime.datetime(2026, 7, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=5))),
    datetime.datetime(2026, 7, 2, 3, 4, 5, tzinfo=_PARIS),
    datetime.date(2026, 1, 2),
    (1, 2),
    [1, 2.5, "x"],
    {"b": 1, "a": 2, "ccc": 3},
    {1: "x", "y": (2, 3)},
    {"z": {"b": 1, "a": [1, (2,)]}, "k": 1e20},
    {"when": datetime.date(2026, 1, 2)},
    {"n": Decimal("1.50")},
    None,
]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_text_boolean_datetime_and_json_values_read_in_their_batch_as_later(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """What the same batch reads of a value given to a text, boolean, datetime or JSON
    column is what a later batch reads (an int into a TEXT column was read back as 5 in its
    batch and '5' after; a tuple in a JSON column as a tuple, then a list...)."""
    engine = create_engine(database_for(kind))
    other_metadata.create_all(engine)
    differ = []
    stored = 0
    refused = set()
    try:
        for table in (text_grid, json_grid):
            columns = [c.name for c in table.columns if c.name != "id"]
            for column in columns:
                for n, value in enumerate(_OTHER_VALUES):
                    key = f"{column}-{n}"
                    row = {"id": key, **dict.fromkeys(columns), column: value}
                    try:
                        with engine.begin() as conn:
                            tx = SqlTx(conn, {table: table})
                            tx.upsert(table, row)
                            in_batch = tx.get(table, key)
                            tx.flush()
                    except (RefusedWrite, UnstorableValueError, sa.exc.DBAPIError, psycopg.Error):
                        refused.add((table.name, column, repr(value)))
                        continue  # the database refuses the value: no later batch reads it
                    with engine.begin() as conn:
                        later = SqlTx(conn, {table: table}).get(table, key)
                    stored += 1
                    assert in_batch is not None and later is not None
                    if repr(in_batch[column]) != repr(later[column]):
                        differ.append((table.name, column, value, in_batch[column], later[column]))
    finally:
        engine.dispose()
    assert stored > 170
    assert differ == [], "\n".join(map(repr, differ))
    # Values refused before are refused still (not converted into something storable).
    for table in ("value_grid_text", "value_grid_json"):
        for column, value in [("flag", "'abc'"), ("flag", "2"), ("at", "'abc'"), ("at", "5")]:
            assert (table, column, value) in refused


kinds_metadata = sa.MetaData()
profile = sa.Table(  # written through the driver-level plan on PostgreSQL
    "batch_profile",
    kinds_metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("active", sa.Boolean),
    sa.Column("seen", sa.DateTime(timezone=True)),
)
history = sa.Table(  # JSON: SQLAlchemy's statements
    "batch_history",
    kinds_metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("doc", sa.JSON, nullable=False),
)


class Profiles(Projection):
    """``Opened`` writes a number into a text column, a flag as the database takes it (the
    text ``'yes'`` on PostgreSQL, ``1`` on SQLite), a timestamp with an offset (as ISO text
    on PostgreSQL) and a tuple into a JSON column; ``Touched`` writes what it read."""

    name = "batch_profile"
    tables = (profile, history)
    partitions = 1

    def __init__(self, postgresql: bool) -> None:
        self.postgresql = postgresql

    @on("shop", "Opened")
    def opened(self, event: Event[dict], tx: Tx) -> None:
        seen: Any = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=_PARIS)
        row = {"id": event.aggregate_id, "label": 5, "active": "yes" if self.postgresql else 1}
        tx.upsert(profile, {**row, "seen": seen.isoformat() if self.postgresql else seen})
        tx.upsert(history, {"id": event.aggregate_id, "doc": (1, {2: "two"})})

    @on("shop", "Touched")
    def touched(self, event: Event[dict], tx: Tx) -> None:
        row = tx.get(profile, event.aggregate_id)
        doc = tx.get(history, event.aggregate_id)["doc"]  # type: ignore[index]
        seen = row["seen"]
        when = seen.strftime("%H:%M%z") if isinstance(seen, datetime.datetime) else seen
        label = f"{row['label']!r} {row['active']!r} {when} {doc!r}"  # never fails
        tx.upsert(profile, {**row, "label": label})
        tx.upsert(history, {"id": event.aggregate_id, "doc": [*doc, len(doc)]})


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_text_boolean_datetime_and_json_writes_read_the_same_in_any_batch(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """In the batch that wrote them ``Touched`` read ``5``, ``'yes'`` (or ``1``), the time
    with its +01:00 offset and a tuple with an int key, where the next batch reads ``'5'``,
    ``True``, the time in UTC and a list with a text key."""
    events = [("a", "Opened", {}), ("a", "Touched", {}), ("b", "Opened", {})]
    events += [("b", "Touched", {})]

    def rows(batch_size: int) -> list[tuple[Any, ...]]:
        projection = Profiles(kind == "postgresql")
        with engine_on(database_for(kind), [projection], batch_size=batch_size) as (
            log,
            store,
            engine,
        ):
            log_events(log, events)
            engine.catch_up(deadline=30)
            assert engine.parked() == []
            with log.engine.connect() as conn:
                query = sa.select(profile.c.id, profile.c.label, profile.c.active, history.c.doc)
                query = query.join_from(profile, history, profile.c.id == history.c.id)
                return [tuple(r) for r in conn.execute(query.order_by(profile.c.id))]

    one_by_one = rows(1)
    assert rows(1000) == one_by_one
    label = "'5' True 02:04+0000 [1, {'2': 'two'}]"
    doc = [1, {"2": "two"}, 2]
    assert one_by_one == [("a", label, True, doc), ("b", label, True, doc)]


edge_metadata = sa.MetaData()
times = sa.Table(
    "value_times",
    edge_metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True)),
    sa.Column("naive", sa.DateTime),
    sa.Column("day", sa.Date),
)
_EST = datetime.timezone(datetime.timedelta(hours=-5))
_TIMES: list[Any] = [
    datetime.datetime(9999, 12, 31, 23, 59, tzinfo=_EST),
    datetime.datetime(1, 1, 1, tzinfo=datetime.UTC),
    datetime.datetime(1, 1, 1),
    datetime.date(1, 1, 1),
    "0001-01-01 00:00:00",
    "9999-12-31 23:59:59.999999",
    datetime.datetime(1850, 1, 1, tzinfo=_PARIS),
]
# Per session time zone, the (column, value) the upsert refuses: stored past year 9999 or
# before year 1 in UTC or the session's zone, which psycopg cannot read back.
_UNREADABLE = {
    "UTC": {(column, 0) for column in ("at", "naive", "day")},
    "America/New_York": {(column, 1) for column in ("at", "naive", "day")},
    "Europe/Paris": {(column, 0) for column in ("at", "naive", "day")},
}


def _in_zone(pg_database: Callable[[], str], zone: str) -> sa.Engine:
    engine = create_engine(pg_database())
    with engine.connect() as conn:
        database = engine.url.database
        conn.exec_driver_sql(f"ALTER DATABASE \"{database}\" SET timezone = '{zone}'")
        conn.commit()
    engine.dispose()
    return engine


def _differences(
    engine: sa.Engine, table: sa.Table, values: list[Any]
) -> tuple[list[Any], set[tuple[str, int]]]:
    """What a batch reads of each value in each column and a later batch reads otherwise
    (or cannot read), and the (column, index) the upsert refused naming the column. Each row
    is written whole (its other columns NULL): the batch reads it from memory, not from the
    database after a flush."""
    differ, refused = [], set()
    for column in [c.name for c in table.columns if c.name != "id"]:
        for n, found in enumerate(outcomes(engine, table, column, values)):
            if found.refused is not None:
                assert found.refused.startswith(f"{table.name}.{column} cannot hold ")
                refused.add((column, n))
            elif not found.same:
                differ.append((column, found.value, found.failed or (found.in_batch, found.later)))
    return differ, refused


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Europe/Paris"])
def test_times_near_year_1_and_9999_read_in_their_batch_as_later_or_are_refused(
    zone: str, pg_database: Callable[[], str]
) -> None:
    """A time stored past year 9999 or before year 1 in UTC or the session's zone was
    passed through: every later read of the row failed in psycopg ("timestamp too large").
    Naive times of year 1 in Paris (LMT, +00:09:21) were kept naive in their batch."""
    engine = _in_zone(pg_database, zone)
    edge_metadata.create_all(engine)
    try:
        differ, refused = _differences(engine, times, _TIMES)
    finally:
        engine.dispose()
    assert differ == [], "\n".join(map(repr, differ))
    assert refused == _UNREADABLE[zone]


_TEXT_TIMES: list[Any] = [
    "2024-07-01 12:00 utc",  # zone names and abbreviations are read in any case
    "2024-07-01 12:00 europe/paris",
    "2024-07-01 12:00 PST",  # an abbreviation of a fixed offset: -08:00
    "2024-07-01 12:00 cet",  # +01:00, in summer too
    "2024-07-01 12:00:00.1234567",  # rounded to microseconds, half to even (rint)
    "2024-07-01 12:00:00.1234565",
    "2024-07-01 23:59:59.9999995",  # the next day; a date column keeps the day written
    "9999-12-31 23:59:59.9999995",  # year 10000 but in a date column
    "2024-07-01 12:00 MSK",  # an offset PostgreSQL takes from Moscow's history
]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris"])
def test_time_text_postgresql_reads_is_converted_as_it_stores_it(
    zone: str, pg_database: Callable[[], str]
) -> None:
    """Zone names in another case, abbreviations (``PST``) and more than six fractional
    digits were refused, where PostgreSQL stores them."""
    engine = _in_zone(pg_database, zone)
    edge_metadata.create_all(engine)
    try:
        differ, refused = _differences(engine, times, _TEXT_TIMES)
    finally:
        engine.dispose()
    assert differ == [], "\n".join(map(repr, differ))
    year_10000 = {("at", 7), ("naive", 7)}
    assert refused == year_10000 | {(column, 8) for column in ("at", "naive", "day")}


_UUID = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
_UUID_FORMS = [
    _UUID.upper(),
    _UUID.replace("-", ""),
    "{" + _UUID + "}",
    "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_uuid_written_as_text_is_found_in_its_batch_as_later(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """A row upserted with ``id=str(u)`` was not found by ``get(table, u)`` in its batch
    (found later); on SQLite a text UUID failed only at the flush (AttributeError)."""
    import uuid

    metadata = sa.MetaData()
    table = sa.Table(
        "batch_uuids",
        metadata,
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("ref", sa.Uuid),
    )
    engine = create_engine(database_for(kind))
    metadata.create_all(engine)
    key = uuid.UUID(_UUID)
    try:
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table})
            for n, form in enumerate(_UUID_FORMS):
                tx.upsert(table, {"id": form, "ref": _UUID_FORMS[-1 - n]})
            for column, value in [("ref", "a0e-ebc999c0b4ef8bb6d6bb9bd380a11"), ("id", 5)]:
                with pytest.raises(UnstorableValueError, match=rf"^batch_uuids\.{column} "):
                    tx.upsert(table, {"id": _UUID, column: value})
            in_batch = [tx.get(table, key), tx.get(table, _UUID.upper())]
            tx.flush()
        with engine.begin() as conn:
            later = [SqlTx(conn, {table: table}).get(table, form) for form in (key, _UUID)]
    finally:
        engine.dispose()
    assert in_batch == later == [{"id": key, "ref": key}] * 2
