"""A list, tuple, dict or set written to a column of one number, moment, date, time or
interval is refused by the upsert, naming the column. Left to the flush, what became of it
hung on the batch's shape: ``[5]`` was stored as 5 in an integer column and ``(moment,)``
as its moment (the upsert's arrays are unnested, and flattened with them), two rows of two
items each failed on a NULL key ("violates not-null constraint" on ``id``), others were
refused by PostgreSQL or sqlite3 with the whole batch. ARRAY and JSON columns keep lists."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from projections.api import UnstorableValueError
from projections.sql_tx import SqlTx
from tests.batch_value_helpers import outcomes, problems, read_back, refused, store

_MOMENT = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
_SCALARS: dict[str, tuple[sa.types.TypeEngine[Any], Any]] = {
    "i": (sa.Integer(), 5),
    "b": (sa.BigInteger(), 5),
    "f": (sa.Float(), 1.5),
    "n": (sa.Numeric(10, 2), 1),
    "ts": (sa.DateTime(timezone=True), _MOMENT),
    "d": (sa.Date(), date(2024, 5, 1)),
    "t": (sa.Time(), time(10, 0)),
    "iv": (sa.Interval(), timedelta(hours=1)),
}


def _containers(value: Any) -> list[Any]:
    return [[value], (value,), [value, value], [[value]], {"k": value}, {value}]


def _table() -> sa.Table:
    metadata = sa.MetaData()
    return sa.Table(
        "container_values",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        *(sa.Column(name, kind) for name, (kind, _) in _SCALARS.items()),
        sa.Column("ints", postgresql.ARRAY(sa.Integer).with_variant(sa.JSON(), "sqlite")),
        sa.Column("doc", sa.JSON),
    )


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_container_in_a_scalar_column_is_refused_by_the_upsert_naming_the_column(
    kind: str, database_for: Callable[[str], str]
) -> None:
    table = _table()
    with store(database_for(kind), table.metadata) as engine:
        found = {
            name: outcomes(engine, table, name, _containers(value))
            for name, (_, value) in _SCALARS.items()
        }
        lists = outcomes(engine, table, "ints", [[5], [[1, 2], [3, 4]]])
        documents = outcomes(engine, table, "doc", [[5], {"k": [1, 2]}])
    for name, (_, value) in _SCALARS.items():
        messages = refused(found[name])
        assert set(messages) == {repr(v) for v in _containers(value)}, name
        for message in messages.values():
            assert message.startswith(f"container_values.{name} cannot hold"), message
            assert "is not one value" in message, message
    assert problems(lists) == [] and refused(lists) == {}
    assert read_back(lists) == {"[5]": [5], "[[1, 2], [3, 4]]": [[1, 2], [3, 4]]}
    assert problems(documents) == [] and refused(documents) == {}
    assert read_back(documents) == {"[5]": [5], "{'k': [1, 2]}": {"k": [1, 2]}}


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_the_refused_row_leaves_the_batch_as_it_was(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """Two rows of two items each failed the flush on a NULL ``id``; now the upsert of the
    second is refused and the batch commits what it had."""
    table = _table()
    with store(database_for(kind), table.metadata) as engine:
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table})
            tx.upsert(table, {"id": "a", "i": 7})
            with pytest.raises(UnstorableValueError, match=r"^container_values\.i cannot hold"):
                tx.upsert(table, {"id": "a", "i": [1, 2]})
            with pytest.raises(UnstorableValueError, match=r"^container_values\.i cannot hold"):
                tx.upsert(table, {"id": "b", "i": [3, 4]})
            assert tx.get(table, "a") is not None and tx.get(table, "a")["i"] == 7
            assert tx.get(table, "b") is None
            tx.flush()
        with engine.connect() as conn:
            rows = conn.execute(sa.select(table.c.id, table.c.i).order_by(table.c.id)).all()
    assert [tuple(row) for row in rows] == [("a", 7)]
