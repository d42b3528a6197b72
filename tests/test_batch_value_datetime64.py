"""``numpy.datetime64`` values are kept as the naive ``datetime`` they stand for (SQLite
stored the value's bytes as a BLOB, psycopg could not adapt it at the flush, failing the whole
batch); one no ``datetime`` holds exactly (``NaT``, nanoseconds) is refused by the upsert
naming the column. Each expectation was checked against the database (write, commit, read
back)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from projections.sql_tx import SqlTx
from tests.batch_value_helpers import outcomes, problems, read_back, refused, store


def _numpy() -> Any:
    return pytest.importorskip("numpy", reason="numpy is not installed in this venv")


def _table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "datetime64_values",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("dt", sa.DateTime),
        sa.Column("tz", sa.DateTime(timezone=True)),
        sa.Column("d", sa.Date),
        sa.Column("t", sa.Text),
        sa.Column("s", sa.String(40)),
    )


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_numpy_datetime64_is_kept_as_the_datetime_it_stands_for(
    kind: str, database_for: Callable[[str], str]
) -> None:
    np = _numpy()
    exact = [
        np.datetime64("2024-01-02T03:04:05.123456"),
        np.datetime64("2024-01-02"),  # a day: its midnight
        np.datetime64("2024-01-02T03:04:05.123456000", "ns"),
    ]
    inexact = [np.datetime64("NaT"), np.datetime64("2024-01-02T03:04:05.123456789", "ns")]
    metadata = sa.MetaData()
    table = _table(metadata)
    with store(database_for(kind), metadata) as engine:
        found = {c: outcomes(engine, table, c, exact + inexact) for c in ("dt", "tz", "d", "t")}
        found["s"] = outcomes(engine, table, "s", exact)
    assert {column: problems(each) for column, each in found.items() if problems(each)} == {}
    later = read_back(found["dt"])
    assert later[repr(exact[0])] == datetime(2024, 1, 2, 3, 4, 5, 123456)
    assert later[repr(exact[1])] == datetime(2024, 1, 2)
    assert later[repr(exact[2])] == later[repr(exact[0])]
    assert all(type(value) is datetime for value in later.values())
    for column in ("dt", "tz", "d", "t"):  # naming the column (checked by outcomes)
        assert set(refused(found[column])) == set(map(repr, inexact)), column


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_row_is_found_by_a_numpy_datetime64(
    kind: str, database_for: Callable[[str], str]
) -> None:
    np = _numpy()
    metadata = sa.MetaData()
    table = sa.Table(
        "datetime64_keys",
        metadata,
        sa.Column("at", sa.DateTime, primary_key=True),
        sa.Column("v", sa.Text),
    )
    moment = np.datetime64("2024-01-02T03:04:05")
    with store(database_for(kind), metadata) as engine:
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table})
            tx.upsert(table, {"at": moment, "v": "x"})
            tx.flush()
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table})
            assert tx.get(table, moment) == {"at": datetime(2024, 1, 2, 3, 4, 5), "v": "x"}
            assert [row["v"] for row in tx.find(table, at=moment)] == ["x"]
