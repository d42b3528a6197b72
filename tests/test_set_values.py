"""A set (or frozenset) written into a text column is refused by the upsert, naming the
column, as a list or dict is: no driver binds one, so the flush failed the whole batch
(PostgreSQL and SQLite). The batch's other writes stay as they were."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from outbox.db import create_engine
from projections.api import UnstorableValueError
from projections.sql_tx import SqlTx

metadata = sa.MetaData()
notes = sa.Table(
    "set_notes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("text", sa.Text),
    sa.Column("short", sa.String(20)),
)


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
@pytest.mark.parametrize("column", ["text", "short"])
@pytest.mark.parametrize("value", [{"a", "b"}, frozenset({"a"})], ids=["set", "frozenset"])
def test_a_set_into_a_text_column_is_refused_by_the_upsert(
    kind: str, column: str, value: Any, database_for: Callable[[str], str]
) -> None:
    engine = create_engine(database_for(kind))
    metadata.create_all(engine)
    try:
        with engine.begin() as conn:
            tx = SqlTx(conn, {notes: notes})
            tx.upsert(notes, {"id": 1, "text": "kept", "short": "kept"})
            with pytest.raises(UnstorableValueError) as refused:
                tx.upsert(notes, {"id": 1, column: value})
            assert str(refused.value).startswith(
                f"set_notes.{column} cannot hold a value of type {type(value).__name__}: "
            ), str(refused.value)
            assert "'a'" not in str(refused.value)
            tx.upsert(notes, {"id": 2, "text": "also", "short": "also"})
            tx.flush()
        with engine.connect() as conn:
            rows = conn.execute(sa.select(notes).order_by(notes.c.id)).all()
        assert [tuple(row) for row in rows] == [(1, "kept", "kept"), (2, "also", "also")]
    finally:
        engine.dispose()
