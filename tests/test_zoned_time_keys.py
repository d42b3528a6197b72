"""A ``Time(timezone=True)`` key: Python finds ``10:00+00:00`` and ``12:00+02:00`` equal (the same
instant), PostgreSQL's ``timetz`` does not (its ``=`` compares the time and the offset): one
batch writing both folded them into one row, two batches stored two. SQLite stores a time's
wall time (the offset dropped): there ``10:00+00:00`` and ``10:00+05:00`` are one row.

Each scenario runs as written (its batches), with every operation in a batch of its own (what
the database decides: the reference), all in one batch, and as written with a rebuild's COPY
of new rows: what each ``tx.get`` read and the rows stored must agree."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, time, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from outbox.db import create_engine
from projections.sql_tx import SqlTx
from projections.sql_writes import NewRows

_TEN_UTC = time(10, 0, tzinfo=UTC)
_NOON_PLUS_TWO = time(12, 0, tzinfo=timezone(timedelta(hours=2)))  # the same instant
_TEN_PLUS_FIVE = time(10, 0, tzinfo=timezone(timedelta(hours=5)))  # the same wall time

Op = tuple[Any, ...]
# Scenarios: batches of operations ("upsert", key, v), ("get", key), ("delete", key),
# ("prefetch", [keys]).
_SCENARIOS: dict[str, list[list[Op]]] = {
    "same_instant": [
        [
            ("upsert", _TEN_UTC, 1),
            ("get", _NOON_PLUS_TWO),
            ("upsert", _NOON_PLUS_TWO, 2),
            ("get", _TEN_UTC),
            ("get", "12:00:00+02"),
            ("get", _NOON_PLUS_TWO),
        ]
    ],
    "same_wall_time": [
        [
            ("upsert", _TEN_UTC, 1),
            ("get", _TEN_PLUS_FIVE),
            ("upsert", _TEN_PLUS_FIVE, 2),
            ("get", _TEN_UTC),
        ]
    ],
    "delete": [
        [("upsert", _TEN_UTC, 1)],
        [("delete", _NOON_PLUS_TWO), ("get", _TEN_UTC), ("get", _NOON_PLUS_TWO)],
    ],
    "prefetch": [
        [("upsert", _TEN_UTC, 1), ("upsert", _TEN_PLUS_FIVE, 5)],
        [
            ("prefetch", [_NOON_PLUS_TWO, _TEN_UTC]),
            ("get", _NOON_PLUS_TWO),
            ("get", _TEN_UTC),
            ("upsert", _NOON_PLUS_TWO, 2),
            ("get", _TEN_UTC),
        ],
    ],
}


def _tables() -> list[sa.Table]:
    metadata = sa.MetaData()
    key_type = sa.Time(timezone=True)
    arrays = sa.Table(  # a driver-level plan: = ANY(array) reads and deletes, COPY
        "zoned_arrays",
        metadata,
        sa.Column("k", key_type, primary_key=True),
        sa.Column("v", sa.Integer),
    )
    statements = sa.Table(  # a JSON column: SQLAlchemy's upserts
        "zoned_statements",
        metadata,
        sa.Column("k", key_type, primary_key=True),
        sa.Column("v", sa.Integer),
        sa.Column("doc", sa.JSON),
    )
    compound = sa.Table(  # SQLAlchemy's deletes and IN reads
        "zoned_compound",
        metadata,
        sa.Column("a", sa.Text, primary_key=True),
        sa.Column("k", key_type, primary_key=True),
        sa.Column("v", sa.Integer),
    )
    return [arrays, statements, compound]


def _key(table: sa.Table, value: Any) -> Any:
    return ("x", value) if "a" in table.c else value


def _shown(row: dict[str, Any] | None) -> tuple[str, int] | None:
    return None if row is None else (row["k"].isoformat(), row["v"])


def _run(engine: sa.Engine, table: sa.Table, batches: list[list[Op]], copy: bool) -> Any:
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
                    reads.append(_shown(tx.get(table, _key(table, args[0]))))
                elif op == "delete":
                    tx.delete(table, _key(table, args[0]))
                else:
                    tx.prefetch(table, [_key(table, key) for key in args[0]])
            tx.flush()
    with engine.begin() as conn:
        stored = sorted(_shown(dict(row._mapping)) for row in conn.execute(sa.select(table)))
        conn.execute(table.delete())
    return reads, stored


@pytest.mark.parametrize("scenario", list(_SCENARIOS))
@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_zoned_time_key_is_the_row_its_database_finds(
    kind: str, scenario: str, database_for: Callable[[str], str]
) -> None:
    batches = _SCENARIOS[scenario]
    if kind == "sqlite":  # SQLite's Time takes no text
        batches = [[op for op in batch if not isinstance(op[1], str)] for batch in batches]
    tables = _tables()
    engine = create_engine(database_for(kind))
    tables[0].metadata.create_all(engine)
    try:
        wrong = []
        for table in tables:
            alone = _run(engine, table, [[op] for batch in batches for op in batch], False)
            runs = {
                "as written": _run(engine, table, batches, False),
                "in one batch": _run(engine, table, [[op for b in batches for op in b]], False),
                "copied": _run(engine, table, batches, True),
            }
            wrong += [(table.name, how, got, alone) for how, got in runs.items() if got != alone]
        assert not wrong
    finally:
        engine.dispose()


def test_postgresql_keeps_a_zoned_time_per_offset(database_for: Callable[[str], str]) -> None:
    """The reference the scenarios rely on: PostgreSQL stores one row per wall time and offset
    (SQLite one per wall time)."""
    table = _tables()[0]
    expected = {
        "postgresql": [("10:00:00+00:00", 1), ("10:00:00+05:00", 5), ("12:00:00+02:00", 2)],
        "sqlite": [("10:00:00", 5), ("12:00:00", 2)],
    }
    for kind, rows in expected.items():
        engine = create_engine(database_for(kind))
        table.metadata.create_all(engine)
        try:
            with engine.begin() as conn:
                tx = SqlTx(conn, {table: table})
                for value, v in ((_TEN_UTC, 1), (_NOON_PLUS_TWO, 2), (_TEN_PLUS_FIVE, 5)):
                    tx.upsert(table, {"k": value, "v": v})
                assert _shown(tx.get(table, _TEN_UTC)) == (rows[0][0], rows[0][1])
                tx.flush()
            with engine.begin() as conn:
                stored = sorted(_shown(dict(r._mapping)) for r in conn.execute(sa.select(table)))
            assert stored == rows, kind
        finally:
            engine.dispose()
