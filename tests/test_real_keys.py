"""A PostgreSQL ``real`` (``REAL``, ``FLOAT(p <= 24)``) column looked up by a value it holds:
``tx.get`` of a row not prefetched, ``tx.find`` by the key or another ``real`` column, and a
prefetch of a table without a driver-level plan (a JSON column) or with a compound key found
no row once the value was not exact in single precision (0.1): psycopg sends a double, and
PostgreSQL compared the column widened to one. The value is now cast to ``real`` first."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from outbox.db import create_engine
from projections.sql_tx import SqlTx

_KEYS = [0.1, 1 / 3, 2**40, 16_777_217, 3.4e38, -2.5]


def _tables() -> tuple[sa.Table, sa.Table, sa.Table]:
    metadata = sa.MetaData()
    plain = sa.Table(
        "real_plain",
        metadata,
        sa.Column("k", sa.REAL, primary_key=True),
        sa.Column("r", sa.REAL),
    )
    documents = sa.Table(  # a JSON column: no driver-level plan, SQLAlchemy's statements
        "real_documents",
        metadata,
        sa.Column("k", sa.Float(precision=20), primary_key=True),
        sa.Column("doc", sa.JSON),
    )
    compound = sa.Table(
        "real_compound",
        metadata,
        sa.Column("a", sa.Text, primary_key=True),
        sa.Column("k", sa.REAL, primary_key=True),
    )
    return plain, documents, compound


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_real_key_is_found_by_every_lookup(kind: str, database_for: Callable[[str], str]) -> None:
    plain, documents, compound = _tables()
    engine = create_engine(database_for(kind))
    plain.metadata.create_all(engine)
    tables = {t: t for t in (plain, documents, compound)}
    try:
        with engine.begin() as conn:
            tx = SqlTx(conn, tables)
            for n, key in enumerate(_KEYS):
                tx.upsert(plain, {"k": key, "r": key})
                tx.upsert(documents, {"k": key, "doc": {"n": n}})
                tx.upsert(compound, {"a": "x", "k": key})
            stored = {key: tx.get(plain, key)["k"] for key in _KEYS}  # type: ignore[index]
            tx.flush()
        missed = []
        for key in _KEYS:
            with engine.begin() as conn:
                tx = SqlTx(conn, tables)
                found = {
                    "get": tx.get(plain, key),
                    "find key": tx.find(plain, k=key),
                    "find column": tx.find(plain, r=key),
                    "find compound": tx.find(compound, a="x", k=key),
                }
                tx.prefetch(documents, [key])
                tx.prefetch(compound, [("x", key)])
                found["prefetch plan-less"] = tx.get(documents, key)
                found["prefetch compound"] = tx.get(compound, ("x", key))
                missed += [(key, how) for how, row in found.items() if not row]
                assert found["get"] is None or found["get"]["k"] == stored[key]
        with engine.begin() as conn:
            tx = SqlTx(conn, tables)
            for key in _KEYS:
                tx.delete(plain, key)
                tx.delete(documents, key)
                tx.delete(compound, ("x", key))
            tx.flush()
            left = [
                conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() for t in tables
            ]
    finally:
        engine.dispose()
    assert missed == []
    assert left == [0, 0, 0]
