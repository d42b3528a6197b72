"""Values of a type a number column cannot take (a date, a datetime, a time, an interval,
bytes) are refused by the upsert, ``get`` and ``find`` naming the column on PostgreSQL:
before, the flush failed the whole batch (``cannot cast type timestamp[] to integer[]``) and
a lookup aborted the transaction. A key given as a list is refused naming the table and its
key columns (it raised ``TypeError: unhashable type: 'list'``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from projections.api import UnstorableValueError
from projections.sql_tx import SqlTx
from tests.batch_value_helpers import outcomes, problems, refused, store

_NUMBERS: dict[str, Any] = {
    "i": sa.Integer,
    "b": sa.BigInteger,
    "s": sa.SmallInteger,
    "n": sa.Numeric(10, 2),
    "f": sa.Float,
    "r": sa.REAL,
}
_NOT_NUMBERS: list[Any] = [
    date(2020, 1, 2),
    datetime(2020, 1, 2, 3, 4),
    datetime(2020, 1, 2, tzinfo=UTC),
    time(1, 2),
    timedelta(days=1),
    b"12",
    bytearray(b"1"),
    memoryview(b"1"),
]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_date_or_bytes_into_a_number_column_is_refused_by_the_upsert(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """PostgreSQL casts no date, time, interval or bytea to a number: each is refused naming
    the column, the batch goes on; SQLite stores each (as text or a BLOB), read alike in and
    after the batch."""
    metadata = sa.MetaData()
    columns = [sa.Column(name, kind) for name, kind in _NUMBERS.items()]
    table = sa.Table("typed", metadata, sa.Column("id", sa.Text, primary_key=True), *columns)
    with store(database_for(kind), metadata) as engine:
        found = {name: outcomes(engine, table, name, _NOT_NUMBERS) for name in _NUMBERS}
    assert {name: problems(each) for name, each in found.items() if problems(each)} == {}
    if kind == "postgresql":
        for name, each in found.items():
            assert set(refused(each)) == {repr(value) for value in _NOT_NUMBERS}, name


@pytest.mark.parametrize("value", [datetime(2020, 1, 2), date(2020, 1, 2), b"1"])
def test_get_and_find_by_a_date_on_a_number_column_refuse_naming_it(
    value: Any, database_for: Callable[[str], str]
) -> None:
    """PostgreSQL: refused naming the column, the transaction goes on."""
    metadata = sa.MetaData()
    table = sa.Table(
        "typed_keys",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("n", sa.Numeric(10, 2)),
    )
    with store(database_for("postgresql"), metadata) as engine, engine.begin() as conn:
        tx = SqlTx(conn, {table: table})
        tx.upsert(table, {"id": 1, "n": 1})
        with pytest.raises(UnstorableValueError, match=r"^typed_keys\.id "):
            tx.get(table, value)
        with pytest.raises(UnstorableValueError, match=r"^typed_keys\.n "):
            tx.find(table, n=value)
        assert tx.get(table, 1) is not None  # the transaction goes on


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
@pytest.mark.parametrize("key", [[1], (1, [2]), {"id": 1}])
def test_a_key_given_as_a_list_is_refused_naming_the_table_and_its_key(
    kind: str, key: Any, database_for: Callable[[str], str]
) -> None:
    metadata = sa.MetaData()
    table = sa.Table(
        "listed",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("k", sa.Integer, primary_key=True)
        if isinstance(key, tuple)
        else sa.Column("k", sa.Text),
    )
    with store(database_for(kind), metadata) as engine, engine.begin() as conn:
        tx = SqlTx(conn, {table: table})
        tx.upsert(table, {"id": 1, "k": 2})
        # A prefetch raises what get raises, not a RefusedWrite (a key of the wrong length too).
        for look in (tx.get, tx.delete, lambda table, key: tx.prefetch(table, [key])):
            with pytest.raises(ValueError, match=r"^listed: key .* primary key \['id'"):
                look(table, key)
        assert tx.get(table, (1, 2) if isinstance(key, tuple) else 1) is not None


_FLOAT_COLUMNS: dict[str, Any] = {
    "f": sa.Float,
    "r": sa.REAL,
    "n": sa.Numeric(10, 2),
    "nn": sa.Numeric,
}
_BYTES: list[Any] = [b"12", b"abc", bytearray(b"1"), memoryview(b"1")]
_PAST_DOUBLES: list[Any] = [Decimal("1e400"), Decimal("-1e400"), Decimal("1e-400")]
_PAST_SINGLES: list[Any] = [Decimal("1e39"), Decimal("-1e-50")]
_IN_RANGE: list[Any] = [Decimal("1e300"), Decimal("1e-310"), Decimal("0E-400"), Decimal("1.5")]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_bytes_or_a_decimal_past_a_float_range_is_refused_by_the_upsert(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """Bytes into a float or NUMERIC column: PostgreSQL casts none; on SQLite, SQLAlchemy's
    ``float()`` read ``b"12"`` as 12.0 and failed the flush, the whole batch, on ``b"abc"``:
    refused on both. A ``Decimal`` past a double's range (or so small it is read as zero),
    which PostgreSQL refuses ("out of range for type double precision"), was stored as
    infinity or 0.0: refused, as text of it is; in a PostgreSQL ``REAL``, past a single's."""
    metadata = sa.MetaData()
    columns = [sa.Column(name, kind) for name, kind in _FLOAT_COLUMNS.items()]
    table = sa.Table("floated", metadata, sa.Column("id", sa.Text, primary_key=True), *columns)
    values = [*_BYTES, *_PAST_DOUBLES, *_PAST_SINGLES, *_IN_RANGE]
    with store(database_for(kind), metadata) as engine:
        found = {name: outcomes(engine, table, name, values) for name in _FLOAT_COLUMNS}
    assert {name: problems(each) for name, each in found.items() if problems(each)} == {}
    floats = {"f": [*_BYTES, *_PAST_DOUBLES], "r": [*_BYTES, *_PAST_DOUBLES]}
    if kind == "postgresql":
        floats["r"] += _PAST_SINGLES + [Decimal("1e300"), Decimal("1e-310")]
        numbers = _BYTES  # NUMERIC keeps any Decimal (rounded to its scale)
    else:  # a Decimal too small for a double is rounded to the column's scale: 0
        numbers = [*_BYTES, *_PAST_DOUBLES[:2]]
    expected = {**floats, "n": numbers, "nn": numbers}
    if kind == "postgresql":
        expected["n"] = [*_BYTES, *_PAST_DOUBLES[:2], Decimal("1e39"), Decimal("1e300")]
    for name, each in found.items():
        assert set(refused(each)) == set(map(repr, expected[name])), name
        for message in refused(each).values():
            assert "range" in message or "number column" in message or "overflow" in message
