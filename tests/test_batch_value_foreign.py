"""Values of subclasses and foreign types (an ``IntEnum`` member, a ``Decimal`` or
``datetime`` subclass, numpy scalars) are kept by the upsert as the plain value the database
returns, so a handler reads in its batch what a later batch reads; ``Decimal('sNaN')`` is
refused naming the column. Each expectation was checked against the database (write,
commit, read back)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from projections.sql_tx import SqlTx
from tests.batch_value_helpers import outcomes, problems, read_back, refused, store


class Level(enum.IntEnum):
    LOW = 1


class Money(Decimal):
    """A Decimal subclass, as a handler's own amount type might be."""


class Ratio(float):
    pass


class Moment(datetime):
    pass


class Day(date):
    pass


def _table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "foreign_values",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("i", sa.Integer),
        sa.Column("b", sa.BigInteger),
        sa.Column("n", sa.Numeric(10, 2)),
        sa.Column("f", sa.Float),
        sa.Column("t", sa.Text),
        sa.Column("ts", sa.DateTime(timezone=True)),
        sa.Column("dt", sa.DateTime),
        sa.Column("d", sa.Date),
    )


_NUMBERS: list[Any] = [Level.LOW, Money("2.50"), Money("-3"), Ratio(2.5), True, 7]
_TIMES: list[Any] = [Moment(2024, 1, 2, 3, 4, 5, tzinfo=UTC), Moment(2024, 1, 2), Day(2024, 1, 2)]
_SIGNALLING = Decimal("sNaN")


def _check(kind: str, database: str, values: dict[str, list[Any]]) -> dict[str, Any]:
    metadata = sa.MetaData()
    table = _table(metadata)
    with store(database, metadata) as engine:
        found = {column: outcomes(engine, table, column, each) for column, each in values.items()}
    assert {column: problems(each) for column, each in found.items() if problems(each)} == {}
    return found


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_subclasses_are_kept_as_the_plain_values_the_database_returns(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """An ``IntEnum`` member, a ``Decimal``, float, ``datetime`` or ``date`` subclass kept
    its type in the batch (a later ``get`` read ``Level.LOW`` where a later batch reads 1)."""
    columns = ("i", "b", "n", "f", "t")
    found = _check(
        kind,
        database_for(kind),
        {**{column: _NUMBERS for column in columns}, "ts": _TIMES, "dt": _TIMES, "d": _TIMES},
    )
    assert read_back(found["i"])[repr(Level.LOW)] == 1
    assert type(read_back(found["i"])[repr(Level.LOW)]) is int
    assert type(read_back(found["n"])[repr(Money("2.50"))]) is Decimal
    assert type(read_back(found["d"])[repr(Day(2024, 1, 2))]) is date
    assert all(type(v) is datetime for v in read_back(found["ts"]).values())


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_signalling_nan_is_refused_by_the_upsert_naming_the_column(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """``Decimal('sNaN')`` (and a subclass of it) was left to the flush, which failed."""
    columns = ("i", "b", "n", "f", "t")
    values = [_SIGNALLING, Money("sNaN")]
    found = _check(kind, database_for(kind), {column: values for column in columns})
    for column in columns:
        assert set(refused(found[column])) == set(map(repr, values)), column


def _numpy() -> Any:
    return pytest.importorskip("numpy", reason="numpy is not installed in this venv")


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_numpy_scalars_are_kept_as_the_plain_numbers_the_database_returns(
    kind: str, database_for: Callable[[str], str]
) -> None:
    np = _numpy()
    numbers = [np.int64(5), np.int32(-3), np.uint8(7), np.float64(2.5)]
    found = _check(
        kind,
        database_for(kind),
        {"i": numbers, "b": numbers, "n": numbers, "f": [*numbers, np.float32(0.5)], "t": numbers},
    )
    assert read_back(found["b"])[repr(np.int64(5))] == 5
    assert type(read_back(found["b"])[repr(np.int64(5))]) is int


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_numpy_integer_key_is_stored_and_found_as_an_integer(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """SQLite stored a ``numpy.int64`` key of a BIGINT column as a BLOB (its bytes): no
    lookup by the integer found the row."""
    np = _numpy()
    metadata = sa.MetaData()
    table = sa.Table(
        "numpy_keys",
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("v", sa.Text),
    )
    with store(database_for(kind), metadata) as engine:
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table})
            tx.upsert(table, {"id": np.int64(5), "v": "five"})
            assert tx.get(table, 5) == {"id": 5, "v": "five"}
            tx.flush()
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table})
            assert tx.get(table, 5) == {"id": 5, "v": "five"}
            assert tx.get(table, np.int64(5)) == {"id": 5, "v": "five"}
            stored = conn.execute(sa.select(table.c.id)).scalar_one()
            assert type(stored) is int and stored == 5


def test_a_date_into_a_sqlite_integer_column_is_kept_as_the_text_sqlite_stores(
    sqlite_database: Callable[[], str],
) -> None:
    """sqlite3 binds a ``datetime`` or ``date`` as its ISO text, which INTEGER affinity keeps:
    a handler read ``date(2024, 1, 2)`` in its batch and '2024-01-02' in a later one."""
    times = [*_TIMES, datetime(2024, 1, 2, 3, 4, 5, 6), date(2024, 1, 2)]
    found = _check("sqlite", sqlite_database(), {"i": times, "b": times})
    assert read_back(found["i"])[repr(date(2024, 1, 2))] == "2024-01-02"
