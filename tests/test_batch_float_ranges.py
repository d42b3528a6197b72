"""A float past a PostgreSQL ``REAL`` column's range: psycopg sends a Python float as
``double precision``, and its cast to ``real`` refuses what becomes infinity ("value out of
range: overflow") or zero ("underflow"); the upsert kept infinity or 0.0, and the batch
stored that. Refused naming the column instead. A zero ``Decimal`` of either sign is sent as
``numeric``, which has no negative zero: a float column stores 0.0, not -0.0 (SQLite's too).
A float column read as ``Decimal`` (``asdecimal``) kept ``-0E-10`` of -0.0 or of a negative
float that rounds to zero at its scale, and sent that ``numeric``: a later batch read
``0E-10``."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from outbox.db import create_engine
from projections.api import UnstorableValueError
from projections.sql_tx import SqlTx
from tests.batch_value_helpers import outcomes, problems, read_back, refused, store

_SINGLES: dict[str, Any] = {"r": sa.REAL, "f24": sa.Float(24), "rd": sa.REAL(asdecimal=True)}
_PAST_SINGLE: list[Any] = [
    1e300,
    -1e300,
    1e39,
    3.4028235677973366e38,  # midway past the largest single: rounds to infinity
    1e-300,
    -5e-324,
    7.006492321624085e-46,  # midway below the least single: rounds to zero
]
_SINGLE: dict[Any, float] = {  # as the server stores it
    3.4028235677973362e38: 3.4028235e38,
    -3.4028234663852886e38: -3.4028235e38,
    7.006492321624087e-46: 1e-45,
    1.401298464324817e-45: 1e-45,
    float("inf"): float("inf"),
    -1.5: -1.5,
}


def _server_refuses(url: str, value: float) -> bool:
    """Whether PostgreSQL refuses ``value`` sent by psycopg into a ``real`` column."""
    conninfo = sa.make_url(url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TEMPORARY TABLE IF NOT EXISTS singles (r real)")
        try:
            conn.execute("INSERT INTO singles VALUES (%s)", (value,))
        except psycopg.errors.NumericValueOutOfRange:
            return True
    return False


def test_a_float_past_a_real_columns_range_is_refused_naming_it(
    pg_database: Callable[[], str],
) -> None:
    url = pg_database()
    assert all(_server_refuses(url, value) for value in _PAST_SINGLE)
    assert not any(_server_refuses(url, value) for value in _SINGLE)
    metadata = sa.MetaData()
    columns = [sa.Column(name, kind) for name, kind in _SINGLES.items()]
    table = sa.Table("singles", metadata, sa.Column("id", sa.Text, primary_key=True), *columns)
    with store(url, metadata) as engine:
        found = {
            name: outcomes(engine, table, name, [*_PAST_SINGLE, *_SINGLE]) for name in _SINGLES
        }
    assert {name: problems(each) for name, each in found.items() if problems(each)} == {}
    for name, each in found.items():
        assert set(refused(each)) == set(map(repr, _PAST_SINGLE)), name
        assert all("out of range" in message for message in refused(each).values()), name
        kept = {repr(value): stored for value, stored in _SINGLE.items()}
        if name == "rd":  # read back as a Decimal of 10 places
            kept = {value: Decimal(f"{stored:.10f}") for value, stored in kept.items()}
        assert read_back(each) == kept, name


def test_a_lookup_by_a_float_past_a_real_key_refuses_it_not_finding_infinity(
    pg_database: Callable[[], str],
) -> None:
    """``get``/``find`` by 1e300 found the row keyed by infinity (the key was converted to
    it), where PostgreSQL compares 1e300 with no real equal to it."""
    metadata = sa.MetaData()
    table = sa.Table(
        "real_keys", metadata, sa.Column("id", sa.REAL, primary_key=True), sa.Column("v", sa.Text)
    )
    engine = create_engine(pg_database())
    metadata.create_all(engine)
    try:
        with engine.begin() as conn:
            conn.execute(table.insert().values(id=float("inf"), v="infinity"))
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table})
            with pytest.raises(UnstorableValueError, match=r"^real_keys\.id .*out of range"):
                tx.get(table, 1e300)
            with pytest.raises(UnstorableValueError, match=r"^real_keys\.id .*out of range"):
                tx.find(table, id=1e300)
            assert tx.get(table, float("inf")) == {"id": float("inf"), "v": "infinity"}
    finally:
        engine.dispose()


_ZEROS: list[Any] = [Decimal("-0"), Decimal("-0.0"), Decimal("-0E-400"), Decimal("0")]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_zero_decimal_into_a_float_column_is_stored_as_positive_zero(
    kind: str, database_for: Callable[[str], str]
) -> None:
    metadata = sa.MetaData()
    table = sa.Table(
        "zeros",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("f", sa.Float),
        sa.Column("r", sa.REAL),
    )
    with store(database_for(kind), metadata) as engine:
        found = {name: outcomes(engine, table, name, _ZEROS) for name in ("f", "r")}
    for name, each in found.items():
        assert problems(each) == [], name
        assert {key: repr(v) for key, v in read_back(each).items()} == dict.fromkeys(
            map(repr, _ZEROS), "0.0"
        ), name


_NEGATIVE_ZEROS: list[Any] = [-0.0, -1e-12, "-0", Decimal("-0"), Decimal("-1E-11")]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_negative_zero_into_a_float_column_read_as_decimal_reads_alike_later(
    kind: str, database_for: Callable[[str], str]
) -> None:
    metadata = sa.MetaData()
    table = sa.Table(
        "decimal_floats",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("fd", sa.Float(asdecimal=True)),
        sa.Column("rd", sa.REAL(asdecimal=True)),
        sa.Column("f2", sa.Float(asdecimal=True, decimal_return_scale=2)),
    )
    with store(database_for(kind), metadata) as engine:
        found = {
            name: outcomes(engine, table, name, _NEGATIVE_ZEROS) for name in ("fd", "rd", "f2")
        }
    assert {name: problems(each) for name, each in found.items() if problems(each)} == {}
    for name, each in found.items():
        zero = "Decimal('0.00')" if name == "f2" else "Decimal('0E-10')"
        kept = {key: repr(v) for key, v in read_back(each).items()}
        assert kept == dict.fromkeys(map(repr, _NEGATIVE_ZEROS), zero), name
