"""``tx.find`` looks its values up as ``tx.get`` looks up a key: converted as the column
stores them (``"5"`` finds the row of an integer 5), no row for one no row can have (an
integer outside the column's range), :class:`UnstorableValueError` naming the table and
column for one the column refuses (``True`` into a ``BIGINT``): before, PostgreSQL refused
the comparison (``smallint = character varying``) and aborted the transaction, failing the
whole batch."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from projections.api import UnstorableValueError
from projections.sql_tx import SqlTx
from tests.batch_value_helpers import store

_TYPES: dict[str, Any] = {
    "si": sa.SmallInteger,
    "i": sa.Integer,
    "b": sa.BigInteger,
    "t": sa.Text,
    "s": sa.String(3),
    "bo": sa.Boolean,
    "n": sa.Numeric(10, 2),
    "f": sa.Float,
    "dt": sa.DateTime,
    "d": sa.Date,
}
_STORED: dict[str, Any] = {
    "si": 5,
    "i": 5,
    "b": 5,
    "t": "5",
    "s": "abc",
    "bo": True,
    "n": Decimal("5"),
    "f": 5.0,
    "dt": datetime(2024, 1, 2),
    "d": date(2024, 1, 2),
}
_VALUES: list[Any] = [
    *("5", " 5", "abc", "abcd", "true", "2024-01-02"),
    *(True, 5, 5.0, 5.5, Decimal("5"), 2**40, 2**70, 1.5e300),
    *(date(2024, 1, 2), datetime(2024, 1, 2), b"x"),
]


def _tables(metadata: sa.MetaData) -> tuple[sa.Table, dict[str, sa.Table]]:
    """A table of one row with a column of each type, and per type a table keyed by it."""
    columns = [sa.Column(name, kind) for name, kind in _TYPES.items()]
    data = sa.Table("finds", metadata, sa.Column("id", sa.Integer, primary_key=True), *columns)
    keyed = {
        name: sa.Table(f"keyed_{name}", metadata, sa.Column("id", kind, primary_key=True))
        for name, kind in _TYPES.items()
    }
    return data, keyed


def _lookup(engine: sa.Engine, table: sa.Table, look: Callable[[SqlTx], Any], column: str) -> str:
    """``found``, ``none``, ``refused`` (if naming ``table.column``) or the failure; after a
    row found, none or a refusal, the transaction still runs a statement (is not aborted)."""
    with engine.begin() as conn:
        tx = SqlTx(conn, {table: table})
        try:
            result = "found" if look(tx) else "none"
        except UnstorableValueError as exc:
            named = str(exc).startswith(f"{table.name}.{column} ")
            result = "refused" if named else f"refused elsewhere: {exc}"
        except Exception as exc:  # noqa: BLE001 - compared with what get does
            return f"failed {type(exc).__name__}"
        conn.execute(sa.text("SELECT 1"))
    return result


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_find_looks_a_value_up_as_get_looks_up_the_same_key(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """Per column type and value: ``find(column=value)`` has the outcome ``get(value)`` has
    on a table keyed by a column of that type (found, no row, refused naming the column)."""
    metadata = sa.MetaData()
    data, keyed = _tables(metadata)
    differ = {}
    with store(database_for(kind), metadata) as engine:
        with engine.begin() as conn:
            conn.execute(data.insert().values(id=1, **_STORED))
            for name, table in keyed.items():
                conn.execute(table.insert().values(id=_STORED[name]))
        for name, table in keyed.items():
            for value in _VALUES:
                got = _lookup(engine, table, lambda tx, t=table, v=value: tx.get(t, v), "id")
                found = _lookup(
                    engine, data, lambda tx, c=name, v=value: tx.find(data, **{c: v}), name
                )
                if got != found:
                    differ[(name, repr(value))] = (got, found)
    assert differ == {}


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_find_by_text_or_a_bool_on_an_integer_column_does_not_abort_the_batch(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """The review's cases: a str on a SMALLINT column, a bool on a BIGINT one."""
    metadata = sa.MetaData()
    data, _ = _tables(metadata)
    with store(database_for(kind), metadata) as engine:
        with engine.begin() as conn:
            conn.execute(data.insert().values(id=1, **_STORED))
        with engine.begin() as conn:
            tx = SqlTx(conn, {data: data})
            assert [row["id"] for row in tx.find(data, si="5")] == [1]
            assert [row["id"] for row in tx.find(data, i=" 5", t=5)] == [1]
            assert tx.find(data, si=str(2**40)) == []  # no SMALLINT holds it
            if kind == "postgresql":  # as get(True) on a BIGINT key; SQLite stores it as 1
                with pytest.raises(UnstorableValueError, match=r"^finds\.b "):
                    tx.find(data, b=True)
            assert tx.get(data, 1) is not None  # the transaction goes on
            tx.upsert(data, {"id": 2, "si": "6"})
            assert [row["id"] for row in tx.find(data, si=6)] == [2]
