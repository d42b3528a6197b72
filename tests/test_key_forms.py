"""A key written in two equal forms (a ``NUMERIC`` key's ``2.5`` and ``2.50``, a float key's
``0.0`` and ``-0.0``): the database's upsert keeps the stored key (``ON CONFLICT`` updates the
other columns), so the key keeps the form of its first write (or of the row read back) and
``tx.get`` in the batch reads what a later batch reads, wherever the batch boundaries fall.
SqlTx's fold let the newer row's key win: ``Decimal('2.50')`` in its batch, ``Decimal('2.5')``
after; two upserts in one batch stored the last form, split across two the first."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from outbox.db import create_engine
from projections.sql_tx import SqlTx
from projections.sql_writes import NewRows
from tests.key_scenarios import key_tables

# (name, key column type, first form, an equal key in another form)
_CASES = [
    ("numeric", sa.Numeric(), Decimal("2.5"), Decimal("2.50")),
    ("numeric_shorter", sa.Numeric(), Decimal("2.50"), Decimal("2.5")),
    ("numeric_int", sa.Numeric(), 2, Decimal("2.0")),
    ("float", sa.Float(), 0.0, -0.0),
    ("double_negative", sa.Double(), -0.0, 0.0),
    ("real", sa.REAL(), 0.0, -0.0),
]
# Where the second write meets the first: in one batch; in a later one, unread, read by
# ``get``, prefetched; a rebuild's COPY of new rows; after a delete (the new form, then).
_SHAPES = ("one", "split", "read", "prefetch", "copy", "deleted")


def _key(table: sa.Table, value: Any) -> Any:
    return ("x", value) if "a" in table.c else value


def _row(table: sa.Table, value: Any, v: int) -> dict[str, Any]:
    row = {"k": value, "v": v}
    return {"a": "x", **row} if "a" in table.c else row


def _stored(engine: sa.Engine, table: sa.Table) -> list[tuple[str, int]]:
    with engine.begin() as conn:
        return [(repr(k), v) for k, v in conn.execute(sa.select(table.c.k, table.c.v))]


def _alone(engine: sa.Engine, table: sa.Table, value: Any) -> str:
    """The form ``value`` is stored in, written alone (its repr); the table is left empty."""
    with engine.begin() as conn:
        tx = SqlTx(conn, {table: table})
        tx.upsert(table, _row(table, value, 0))
        tx.flush()
    ((stored, _),) = _stored(engine, table)
    with engine.begin() as conn:
        conn.execute(table.delete())
    return stored


def _write(engine: sa.Engine, table: sa.Table, first: Any, second: Any, shape: str) -> str:
    """Write ``first`` then ``second`` in ``shape``; the key ``tx.get`` read in the second
    write's batch (its repr)."""
    tables = {table: table}
    if shape not in ("one", "copy"):
        with engine.begin() as conn:
            tx = SqlTx(conn, tables)
            tx.upsert(table, _row(table, first, 1))
            tx.flush()
    with engine.begin() as conn:
        tx = SqlTx(conn, tables, new_rows=NewRows() if shape == "copy" else None)
        if shape in ("one", "copy"):
            tx.upsert(table, _row(table, first, 1))
        elif shape == "read":
            assert tx.get(table, _key(table, first)) is not None
        elif shape == "prefetch":
            tx.prefetch(table, [_key(table, first)])
        elif shape == "deleted":
            tx.delete(table, _key(table, first))
        tx.upsert(table, _row(table, second, 2))
        found = tx.get(table, _key(table, second))
        assert found is not None and found["v"] == 2
        tx.flush()
    return repr(found["k"])


@pytest.mark.parametrize("shape", _SHAPES)
@pytest.mark.parametrize("case", _CASES, ids=[case[0] for case in _CASES])
@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_an_equal_key_keeps_the_form_first_stored(
    kind: str, case: tuple[str, Any, Any, Any], shape: str, database_for: Callable[[str], str]
) -> None:
    _, key_type, first, second = case
    tables = key_tables("forms", lambda: key_type)
    engine = create_engine(database_for(kind))
    tables[0].metadata.create_all(engine)
    try:
        wrong = []
        for table in tables:
            # Deleted first, the row is new: the second form is stored.
            expected = _alone(engine, table, second if shape == "deleted" else first)
            in_batch = _write(engine, table, first, second, shape)
            stored = _stored(engine, table)
            if in_batch != expected or stored != [(expected, 2)]:
                wrong.append((table.name, f"read {in_batch} in its batch", stored, expected))
        assert not wrong
    finally:
        engine.dispose()
