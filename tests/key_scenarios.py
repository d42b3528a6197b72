"""Key scenarios run in batches as written, alone and all in one batch (tests of keys the
database compares otherwise than Python: tests/test_zoned_time_keys.py,
tests/test_case_insensitive_keys.py). Every operation in a batch of its own is what the
database decides, the reference: what each ``tx.get`` read and the rows stored must agree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from projections.sql_tx import SqlTx
from projections.sql_writes import NewRows

Op = tuple[Any, ...]
"""("upsert", key, v), ("get", key), ("delete", key) or ("prefetch", [keys])."""
Shown = Callable[[dict[str, Any] | None], Any]


def key_tables(prefix: str, key_type: Callable[[], sa.types.TypeEngine[Any]]) -> list[sa.Table]:
    """Three tables keyed by a ``key_type`` column ``k`` (values ``v``), each written by
    another path of the store."""
    metadata = sa.MetaData()
    arrays = sa.Table(  # a driver-level plan: = ANY(array) reads and deletes, COPY
        f"{prefix}_arrays",
        metadata,
        sa.Column("k", key_type(), primary_key=True),
        sa.Column("v", sa.Integer),
    )
    statements = sa.Table(  # a JSON column: SQLAlchemy's upserts
        f"{prefix}_statements",
        metadata,
        sa.Column("k", key_type(), primary_key=True),
        sa.Column("v", sa.Integer),
        sa.Column("doc", sa.JSON),
    )
    compound = sa.Table(  # SQLAlchemy's deletes and IN reads
        f"{prefix}_compound",
        metadata,
        sa.Column("a", sa.Text, primary_key=True),
        sa.Column("k", key_type(), primary_key=True),
        sa.Column("v", sa.Integer),
    )
    return [arrays, statements, compound]


def disagreements(
    engine: sa.Engine, tables: list[sa.Table], batches: list[list[Op]], shown: Shown
) -> list[tuple[Any, ...]]:
    """``(table, how, got, reference)`` for each way of running ``batches`` that read or
    stored otherwise than every operation alone; empty when all agree."""
    wrong = []
    for table in tables:
        alone = _run(engine, table, [[op] for batch in batches for op in batch], False, shown)
        runs = {
            "as written": _run(engine, table, batches, False, shown),
            "in one batch": _run(engine, table, [[op for b in batches for op in b]], False, shown),
            "copied": _run(engine, table, batches, True, shown),
        }
        wrong += [(table.name, how, got, alone) for how, got in runs.items() if got != alone]
    return wrong


def _key(table: sa.Table, value: Any) -> Any:
    return ("x", value) if "a" in table.c else value


def _run(
    engine: sa.Engine, table: sa.Table, batches: list[list[Op]], copy: bool, shown: Shown
) -> Any:
    """What each ``get`` read, and the rows stored after; the table is left empty."""
    reads = []
    for batch in batches:
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table}, new_rows=NewRows() if copy else None)
            for op, *args in batch:
                if op == "upsert":
                    row = {"k": args[0], "v": args[1]}
                    tx.upsert(table, {"a": "x", **row} if "a" in table.c else row)
                elif op == "get":
                    reads.append(shown(tx.get(table, _key(table, args[0]))))
                elif op == "delete":
                    tx.delete(table, _key(table, args[0]))
                else:
                    tx.prefetch(table, [_key(table, key) for key in args[0]])
            tx.flush()
    with engine.begin() as conn:
        stored = sorted(shown(dict(row._mapping)) for row in conn.execute(sa.select(table)))
        conn.execute(table.delete())
    return reads, stored
