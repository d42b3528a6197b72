"""An integer a SQL column cannot keep is refused when the handler writes it, naming the
column, before the row joins the batch: a handler that catches ``WideIntegerError`` writes
its fallback and loses nothing."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from projections import WideIntegerError
from projections.api import Event, Projection, Tx, on
from tests.projection_fixtures import append_tenant_events, engine_on

BIG = 2**70  # 1180591620717411303424


def _table(kind: str) -> sa.Table:
    columns = [
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("whole", sa.BigInteger),
        sa.Column("label", sa.Text),
        sa.Column("note", sa.Text),
        sa.Column("ratio", sa.Float),
        sa.Column("doc", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
    ]
    if kind == "postgresql":
        columns += [
            sa.Column("i4", sa.Integer),
            sa.Column("i2", sa.SmallInteger),
            sa.Column("single", sa.REAL),
            sa.Column("wholes", postgresql.ARRAY(sa.BigInteger)),
        ]
    return sa.Table("wide", sa.MetaData(), *columns)


def _value(payload: dict[str, Any]) -> Any:
    """The value a handler writes: as the payload gives it, or made from it."""
    value = payload.get("v")
    made = payload.get("as")
    if made == "decimal":
        return Decimal(value)
    if made == "text":
        return str(value)
    if made == "array":
        return [[1, 2], [3, value]]
    if made == "power":  # 10**exp: json.dumps writes no integer past Python's digit limit
        return 10 ** payload["exp"]
    if made == "document":
        return {"n": [10 ** payload["exp"], 0.5]}
    return value


def _projection(table: sa.Table) -> Projection:
    class Wide(Projection):
        name = "wide"
        tables = (table,)
        partitions = 1

        @on("bank", "Put")
        def put(self, event: Event[dict], tx: Tx) -> None:
            tx.upsert(
                table, {"id": event.aggregate_id, event.payload["col"]: _value(event.payload)}
            )

        @on("bank", "Labelled")
        def labelled(self, event: Event[dict], tx: Tx) -> None:
            tx.upsert(table, {"id": event.aggregate_id, "label": "first"})

        @on("bank", "Counted")
        def counted(self, event: Event[dict], tx: Tx) -> None:
            """A handler that keeps the value as text when the column refuses it."""
            value = _value(event.payload)
            try:
                tx.upsert(table, {"id": event.aggregate_id, "whole": value})
            except WideIntegerError:
                tx.upsert(table, {"id": event.aggregate_id, "note": str(value)})

        @on("bank", "Copied")
        def copied(self, event: Event[dict], tx: Tx) -> None:
            row = tx.get(table, event.aggregate_id)
            assert row is not None
            tx.upsert(table, {**row, "id": f"{event.aggregate_id}-copy"})

    return Wide()


def _apply(
    kind: str, url: str, events: list[tuple[str, str, dict[str, Any]]], batch_size: int
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The rows written (their non-null columns) and the reasons of the parked events, by
    aggregate."""
    table = _table(kind)
    projection = _projection(table)
    with engine_on(
        url, [projection], batch_size=batch_size, max_attempts=2, retry_backoff=0.001
    ) as (log, store, engine):
        append_tenant_events(log, [(None, account, type_, p) for account, type_, p in events])
        engine.catch_up(deadline=60)
        with log.engine.connect() as conn:
            rows = {
                row.id: {k: v for k, v in row._mapping.items() if v is not None}
                for row in conn.execute(sa.select(table))
            }
        parked = {p.aggregate_id: p.reason for p in store.parked(projection.name)}
    return rows, parked


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
@pytest.mark.parametrize("batch_size", [1, 50])
def test_a_handler_that_catches_the_refusal_writes_its_fallback_and_the_batch_commits(
    kind: str, batch_size: int, database_for: Callable[[str], str]
) -> None:
    """The refused value never joined the batch: not in a new row, nor merged into the row
    an earlier event of the batch wrote."""
    events = [
        ("fresh", "Counted", {"v": BIG}),
        ("merged", "Labelled", {}),
        ("merged", "Counted", {"v": -BIG}),
        ("fits", "Counted", {"v": 2**63 - 1}),
    ]
    rows, parked = _apply(kind, database_for(kind), events, batch_size)

    assert parked == {}
    assert rows == {
        "fresh": {"id": "fresh", "note": str(BIG)},
        "merged": {"id": "merged", "label": "first", "note": str(-BIG)},
        "fits": {"id": "fits", "whole": 2**63 - 1},
    }
