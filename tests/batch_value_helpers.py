"""Writing one value into one column through :class:`SqlTx` and reading it back in the same
batch and in a later one: what the batch-values tests compare."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from outbox.db import create_engine
from projections.api import UnstorableValueError
from projections.sql_tx import SqlTx


@dataclass(frozen=True)
class Outcome:
    """What became of one value: ``refused`` by the upsert (its message), or ``in_batch`` and
    ``later`` (what the same batch and a later one read); ``failed``: the flush or the later
    read failed instead (never expected)."""

    value: Any
    refused: str | None = None
    in_batch: Any = None
    later: Any = None
    failed: str | None = None

    @property
    def same(self) -> bool:
        return self.refused is None and self.failed is None and _same(self.in_batch, self.later)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and repr(a) == repr(b)


def outcome(engine: sa.Engine, table: sa.Table, column: str, value: Any, key: Any) -> Outcome:
    """Upsert ``{id: key, column: value}`` (the other columns NULL), read the row back in its
    batch, commit, read it again in a new transaction."""
    others = {c.name: None for c in table.columns if not c.primary_key and c.name != column}
    try:
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table})
            try:
                tx.upsert(table, {"id": key, **others, column: value})
            except UnstorableValueError as exc:
                message = str(exc)
                assert message.startswith(f"{table.name}.{column}"), message  # [i] for an item
                return Outcome(value, refused=message)
            row = tx.get(table, key)
            tx.flush()
    except Exception as exc:  # noqa: BLE001 - reported as a failure at the flush
        return Outcome(value, failed=f"flush: {type(exc).__name__}: {exc}"[:300])
    try:
        with engine.begin() as conn:
            later = SqlTx(conn, {table: table}).get(table, key)
    except Exception as exc:  # noqa: BLE001 - reported as a failure to read back
        return Outcome(value, failed=f"read: {type(exc).__name__}: {exc}"[:300])
    assert row is not None and later is not None
    return Outcome(value, in_batch=row[column], later=later[column])


def outcomes(engine: sa.Engine, table: sa.Table, column: str, values: list[Any]) -> list[Outcome]:
    """:func:`outcome` of each value, each in a row of its own."""
    return [outcome(engine, table, column, v, f"{column}-{n}") for n, v in enumerate(values)]


def problems(found: list[Outcome]) -> list[tuple[Any, ...]]:
    """The outcomes neither refused by the upsert nor read alike in and after their batch."""
    return [
        (o.value, o.failed or (o.in_batch, o.later))
        for o in found
        if o.refused is None and not o.same
    ]


@contextmanager
def store(url: str, metadata: sa.MetaData, zone: str | None = None) -> Iterator[sa.Engine]:
    """An engine on ``url`` with ``metadata``'s tables created; on PostgreSQL, its sessions'
    ``TimeZone`` set to ``zone`` (the database's setting)."""
    if zone is not None:
        engine = create_engine(url)
        with engine.connect() as conn:
            database = engine.url.database
            conn.exec_driver_sql(f"ALTER DATABASE \"{database}\" SET timezone = '{zone}'")
            conn.commit()
        engine.dispose()
    engine = create_engine(url)
    metadata.create_all(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def read_back(found: list[Outcome]) -> dict[Any, Any]:
    """``{repr(value): what a later batch read}`` of the values stored."""
    return {repr(o.value): o.later for o in found if o.refused is None and o.failed is None}


def refused(found: list[Outcome]) -> dict[str, str]:
    """``{repr(value): the refusal's message}`` of the values the upsert refused."""
    return {repr(o.value): o.refused for o in found if o.refused is not None}
