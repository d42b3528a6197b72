"""A key column that compares text without case: PostgreSQL's ``citext``, SQLite's ``COLLATE
NOCASE``. The database finds ``'Ab'`` and ``'aB'`` one row, Python two keys: a batch writing
both sent two rows to one upsert (PostgreSQL: "ON CONFLICT DO UPDATE command cannot affect row
a second time"), and ``tx.get`` of one did not find the other written in its batch, as a
later batch finds it. So for SQLite's ``COLLATE RTRIM`` (``'ab'`` and ``'ab  '``).

Each scenario runs as written, with every operation in a batch of its own (what the database
decides: the reference), all in one batch, and as written with a rebuild's COPY of new rows:
what each ``tx.get`` read and the rows stored must agree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from outbox.db import create_engine
from tests.key_scenarios import Op, disagreements, key_tables

_SCENARIOS: dict[str, list[list[Op]]] = {
    "one_batch": [
        [
            ("upsert", "Ab", 1),
            ("get", "aB"),
            ("upsert", "aB", 2),
            ("get", "AB"),
            ("upsert", "ab", 3),
        ]
    ],
    "delete": [
        [("upsert", "Ab", 1)],
        [("delete", "AB"), ("get", "ab"), ("upsert", "aB", 2), ("get", "ab")],
    ],
    "prefetch": [
        [("upsert", "Ab", 1), ("upsert", "x-é", 5)],
        [
            ("prefetch", ["ab", "X-é", "x-e"]),
            ("get", "AB"),
            ("get", "X-é"),
            ("get", "x-e"),
            ("upsert", "aB", 2),
            ("get", "ab"),
        ],
    ],
    "accents": [  # what neither database folds: accents, blanks
        [("upsert", "e", 1), ("upsert", "é", 2), ("upsert", "e ", 3), ("get", "E"), ("get", "é")],
    ],
}


_KEY_TYPES: dict[str, Callable[[], sa.types.TypeEngine[Any]]] = {
    "postgresql": postgresql.CITEXT,
    "sqlite": lambda: sa.String(collation="NOCASE"),
    "sqlite_rtrim": lambda: sa.String(collation="RTRIM"),  # trailing blanks ignored
}


def _as_blanks(value: Any) -> Any:
    """A scenario's text for an ``RTRIM`` column: each capital letter as trailing blanks, as
    many as its position (``'aB'`` is ``'ab  '``)."""
    if not isinstance(value, str):
        return [_as_blanks(item) for item in value] if isinstance(value, list) else value
    blanks = sum(i + 1 for i, c in enumerate(value) if c.isupper())
    return value.lower() + " " * blanks


def _shown(row: dict[str, Any] | None) -> tuple[str, int] | None:
    return None if row is None else (row["k"], row["v"])


@pytest.mark.parametrize("scenario", list(_SCENARIOS))
@pytest.mark.parametrize("kind", list(_KEY_TYPES))
def test_a_case_insensitive_key_is_the_row_its_database_finds(
    kind: str, scenario: str, database_for: Callable[[str], str]
) -> None:
    batches = _SCENARIOS[scenario]
    if kind == "sqlite_rtrim":
        batches = [[(op, *map(_as_blanks, args)) for op, *args in batch] for batch in batches]
    tables = key_tables("folded", _KEY_TYPES[kind])
    engine = create_engine(database_for("sqlite" if kind == "sqlite_rtrim" else kind))
    if kind == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE EXTENSION citext")
    tables[0].metadata.create_all(engine)
    try:
        assert disagreements(engine, tables, batches, _shown) == []
    finally:
        engine.dispose()
