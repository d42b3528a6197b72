"""Every value of one column's kind written into every other kind of column: the upsert
refuses it naming the column, or the flush stores it and a later batch reads what the
batch read. None is refused only at the flush, whatever the batch's shape (one row, two
rows alike, a new row beside one of the column's own values, a rebuild's COPY of new
rows). Found refused only at the flush before: ``''`` into an integer or NUMERIC column, a
``UUID`` into a number, date or timestamp column, a ``time``, ``timedelta`` or bytes into a
date or timestamp column (PostgreSQL), a ``UUID`` into an integer column (SQLite)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from outbox.db import create_engine
from projections.api import UnstorableValueError
from projections.sql_tx import SqlTx
from tests.cross_kind_helpers import SHAPES, write_and_read

_COLUMNS: dict[str, sa.types.TypeEngine[Any]] = {
    "text": sa.Text(),
    "short": sa.String(3),
    "flag": sa.Boolean(),
    "count": sa.Integer(),
    "big": sa.BigInteger(),
    "ratio": sa.Float(),
    "real": sa.REAL(),
    "cents": sa.Numeric(10, 2),
    "at": sa.DateTime(timezone=True),
    "naive": sa.DateTime(),
    "day": sa.Date(),
    "clock": sa.Time(),
    "span": sa.Interval(),
    "uid": sa.Uuid(),
    "doc": sa.JSON(),
    "bdoc": sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
}
_OWN: dict[str, Any] = {
    "text": "abc",
    "short": "ab",
    "flag": True,
    "count": 7,
    "big": 7,
    "ratio": 2.5,
    "real": 2.5,
    "cents": Decimal("2.50"),
    "at": datetime(2024, 5, 1, 10, tzinfo=UTC),
    "naive": datetime(2024, 5, 1, 10),
    "day": date(2024, 5, 1),
    "clock": time(10, 30),
    "span": timedelta(hours=1),
    "uid": uuid.UUID(int=5),
    "doc": {"k": [1, 2]},
    "bdoc": {"k": [1, 2]},
}
_VALUES: list[Any] = [
    *_OWN.values(),
    "",
    "  ",
    ".",
    "42",
    "2.5",
    "2024-05-01",
    "10:30",
    "1 day",
    str(uuid.UUID(int=5)),
    "true",
    0,
    -1,
    1e300,
    float("nan"),
    Decimal("NaN"),
    False,
    b"raw",
    time(10, 30, tzinfo=timezone(timedelta(hours=2))),
    [5],
    (7,),
    {"k": 5},
    None,
]


def _table() -> sa.Table:
    return sa.Table(
        "cross_kinds",
        sa.MetaData(),
        sa.Column("id", sa.Text, primary_key=True),
        *(sa.Column(name, kind) for name, kind in _COLUMNS.items()),
    )


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_no_value_of_another_kind_is_refused_only_at_the_flush(
    kind: str, database_for: Callable[[str], str]
) -> None:
    table = _table()
    engine = create_engine(database_for(kind))
    table.metadata.create_all(engine)
    found = []
    try:
        for column in _COLUMNS:
            for value in _VALUES:
                for shape in SHAPES:
                    wrong = write_and_read(engine, table, column, value, shape, _OWN[column])
                    if wrong is not None:
                        found.append((column, value, shape, wrong))
    finally:
        engine.dispose()
    assert found == [], "\n".join(map(repr, found))


@pytest.mark.parametrize(
    ("column", "value", "why"),
    [
        ("count", "", "reads no number"),
        ("cents", "  ", "reads no number"),
        ("big", uuid.UUID(int=5), "casts no UUID"),
        ("at", time(10, 30), "casts no time"),
        ("day", timedelta(hours=1), "casts no timedelta"),
        ("naive", b"raw", "casts no bytes"),
        ("day", uuid.UUID(int=5), "casts no UUID"),
    ],
)
def test_the_refusal_says_why(
    column: str, value: Any, why: str, database_for: Callable[[str], str]
) -> None:
    table = _table()
    engine = create_engine(database_for("postgresql"))
    table.metadata.create_all(engine)
    try:
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table})
            with pytest.raises(UnstorableValueError, match=rf"^cross_kinds\.{column} .*{why}"):
                tx.upsert(table, {"id": "a", column: value})
    finally:
        engine.dispose()
