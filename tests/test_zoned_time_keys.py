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
from tests.key_scenarios import Op, disagreements, key_tables

_TEN_UTC = time(10, 0, tzinfo=UTC)
_NOON_PLUS_TWO = time(12, 0, tzinfo=timezone(timedelta(hours=2)))  # the same instant
_TEN_PLUS_FIVE = time(10, 0, tzinfo=timezone(timedelta(hours=5)))  # the same wall time

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


def _zoned_time() -> sa.Time:
    return sa.Time(timezone=True)


def _shown(row: dict[str, Any] | None) -> tuple[str, int] | None:
    return None if row is None else (row["k"].isoformat(), row["v"])


@pytest.mark.parametrize("scenario", list(_SCENARIOS))
@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_zoned_time_key_is_the_row_its_database_finds(
    kind: str, scenario: str, database_for: Callable[[str], str]
) -> None:
    batches = _SCENARIOS[scenario]
    if kind == "sqlite":  # SQLite's Time takes no text
        batches = [[op for op in batch if not isinstance(op[1], str)] for batch in batches]
    tables = key_tables("zoned", _zoned_time)
    engine = create_engine(database_for(kind))
    tables[0].metadata.create_all(engine)
    try:
        assert disagreements(engine, tables, batches, _shown) == []
    finally:
        engine.dispose()


def test_postgresql_keeps_a_zoned_time_per_offset(database_for: Callable[[str], str]) -> None:
    """The reference the scenarios rely on: PostgreSQL stores one row per wall time and offset
    (SQLite one per wall time)."""
    table = key_tables("zoned", _zoned_time)[0]
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
