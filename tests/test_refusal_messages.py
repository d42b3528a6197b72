"""A refused value's message names its table, its column, the value's type and why, never
the value (nor its repr): the message is logged and kept as its parked event's reason, and a
handler may have written a secret into a column of the wrong type. ``Decimal('-NaN')``
(a NaN with a sign or a payload), which PostgreSQL refuses as psycopg sends it, is refused
by the upsert on both stores instead of being stored as NaN."""

from __future__ import annotations

import enum
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from outbox.db import create_engine
from projections.api import Event, Projection, Tx, UnstorableValueError, WideIntegerError, on
from projections.engine import ProjectionEngine
from projections.sql_tx import SqlTx
from projections.store import Lane
from tests.batch_value_helpers import outcomes, refused, store
from tests.projection_fixtures import append_tenant_events, engine_on

SECRET = "hunter2-secret"
NUMBER = 73311337421  # a distinctive integer, past 32 bits
FLOAT = 7.331337e39  # past REAL's range


class Colour(enum.Enum):
    RED = "red"


def _vault(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "vault",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("small", sa.Integer),
        sa.Column("whole", sa.BigInteger),
        sa.Column("single", sa.REAL),
        sa.Column("ratio", sa.Float),
        sa.Column("kind", sa.Enum(Colour, name="vault_colour")),
        sa.Column("code", sa.String(3)),
        sa.Column("at", sa.DateTime(timezone=True)),
        sa.Column("span", sa.Interval),
        sa.Column("amount", sa.Numeric(10, 2)),
    )


# (column, value, its type's name, the value's texts that must not show, why)
_REFUSED: dict[str, list[tuple[str, Any, str, list[str], str]]] = {
    "postgresql": [
        ("small", NUMBER, "int", [str(NUMBER)], "32-bit integers"),
        ("whole", 2**70 + NUMBER, "int", [str(2**70 + NUMBER)[:20]], "64-bit integers"),
        ("whole", SECRET, "str", [SECRET], "no number"),
        ("single", FLOAT, "float", ["7.331337", "7331337"], "out of range for type real"),
        ("ratio", SECRET.encode(), "bytes", [SECRET], "casts no bytes"),
        ("kind", [SECRET], "list", [SECRET], "Enum column takes one of"),
        ("kind", SECRET, "str", [SECRET], "Enum column takes one of"),
        ("code", SECRET, "str", [SECRET, "hunter"], "too long"),
        ("at", f"2024-01-02 10:00 {SECRET}", "str", [SECRET, "hunter"], "time zone"),
        ("span", "3 hunterpass", "str", ["hunterpass"], "unit"),
    ],
    "sqlite": [
        ("whole", 2**70 + NUMBER, "int", [str(2**70 + NUMBER)[:20]], "64-bit integers"),
        ("ratio", SECRET.encode(), "bytes", [SECRET], "no bytes"),
        ("kind", [SECRET], "list", [SECRET], "Enum column takes one of"),
        ("amount", Decimal("NaN"), "decimal.Decimal", [], "NaN as NULL"),
    ],
}


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_refusal_names_table_column_and_type_never_the_value(
    kind: str, database_for: Callable[[str], str]
) -> None:
    metadata = sa.MetaData()
    table = _vault(metadata)
    with store(database_for(kind), metadata) as engine:
        for column, value, type_name, texts, why in _REFUSED[kind]:
            with engine.begin() as conn:
                tx = SqlTx(conn, {table: table})
                with pytest.raises(UnstorableValueError) as refusal:
                    tx.upsert(table, {"id": "a", column: value})
            message = str(refusal.value)
            start = f"vault.{column} cannot hold a value of type {type_name}: "
            assert message.startswith(start), (column, message)
            assert why in message, (column, message)
            for text in [*texts, repr(value)]:
                assert text not in message, (column, text, message)


def test_a_wide_integer_in_an_array_is_refused_naming_its_item_not_its_value(
    pg_database: Callable[[], str],
) -> None:
    metadata = sa.MetaData()
    table = sa.Table(
        "vault_items",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("wholes", sa.ARRAY(sa.Integer)),
    )
    with store(pg_database(), metadata) as engine, engine.begin() as conn:
        with pytest.raises(WideIntegerError) as refusal:
            SqlTx(conn, {table: table}).upsert(table, {"id": "a", "wholes": [1, NUMBER]})
        with pytest.raises(WideIntegerError) as converted:  # text, read as an integer
            SqlTx(conn, {table: table}).upsert(table, {"id": "a", "wholes": ["1", str(NUMBER)]})
    message = str(refusal.value)
    assert message.startswith("vault_items.wholes[1] cannot hold a value of type int: "), message
    assert str(NUMBER) not in message, message
    message = str(converted.value)
    assert message.startswith("vault_items.wholes cannot hold a value of type list: "), message
    assert "item [1] is past the 32-bit integers" in message, message
    assert str(NUMBER) not in message, message


vault = _vault(sa.MetaData())


class Vault(Projection):
    name = "vault"
    tables = (vault,)
    partitions = 1

    @on("bank", "Put")
    def put(self, event: Event[dict], tx: Tx) -> None:
        tx.upsert(vault, {"id": event.aggregate_id, **event.payload})


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_parked_refusals_reason_does_not_hold_the_value(
    kind: str, database_for: Callable[[str], str]
) -> None:
    events = [
        ("text", "Put", {"whole": SECRET}),
        ("wide", "Put", {"whole": 2**70 + NUMBER}),
        ("enum", "Put", {"kind": [SECRET]}),
        ("fits", "Put", {"whole": 7}),
    ]
    if kind == "sqlite":  # SQLite's affinity keeps the text in an integer column
        events = events[1:]
    projection = Vault()
    with engine_on(database_for(kind), [projection], max_attempts=3, retry_backoff=30) as (
        log,
        sql_store,
        engine,
    ):
        assert isinstance(engine, ProjectionEngine)
        append_tenant_events(log, [(None, a, t, payload) for a, t, payload in events])
        assert engine.process(Lane(projection.name, "bank", 0)).checkpoint == len(events)
        parked = {p.aggregate_id: p.reason for p in sql_store.parked(projection.name)}
    assert sorted(parked) == sorted(a for a, _, _ in events[:-1])
    for reason in parked.values():
        assert reason.startswith("refused for good, not retried: "), reason
        assert "cannot hold a value of type " in reason, reason
        assert SECRET not in reason and str(2**70 + NUMBER)[:20] not in reason, reason


_ODD_NANS = [Decimal("-NaN"), Decimal("NaN12"), Decimal("-NaN12")]
_NAN = Decimal("NaN")


def test_postgresql_refuses_an_odd_nan_sent_directly(pg_database: Callable[[], str]) -> None:
    """What the upsert agrees with: psycopg sends ``Decimal('-NaN')`` as ``-NaN``, which no
    numeric column (nor a float one: it is sent as numeric) reads; plain NaN is stored."""
    engine = create_engine(pg_database())
    try:
        for column_type in ("numeric", "numeric(10, 2)", "double precision", "real", "text"):
            for value in _ODD_NANS:
                with pytest.raises(sa.exc.DataError, match="invalid input syntax"):
                    with engine.connect() as conn:
                        conn.exec_driver_sql(f"SELECT CAST(%s AS {column_type})", (value,))
            with engine.connect() as conn:
                found = conn.exec_driver_sql(f"SELECT CAST(%s AS {column_type})", (_NAN,))
                assert str(found.scalar_one()).lower() == "nan", column_type
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_an_odd_nan_is_refused_by_the_upsert_naming_the_column(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """``Decimal('-NaN')`` was stored as NaN on PostgreSQL (its converter made it plain NaN),
    where PostgreSQL refuses it sent as written; SQLite refuses every NaN."""
    metadata = sa.MetaData()
    table = sa.Table(
        "odd_nans",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("n", sa.Numeric),
        sa.Column("cents", sa.Numeric(10, 2)),
        sa.Column("f", sa.Float),
        sa.Column("r", sa.REAL),
        sa.Column("t", sa.Text),
    )
    columns = ("n", "cents", "f", "r") + (("t",) if kind == "postgresql" else ())
    with store(database_for(kind), metadata) as engine:
        for column in columns:
            found = outcomes(engine, table, column, _ODD_NANS)
            messages = refused(found)
            assert set(messages) == set(map(repr, _ODD_NANS)), (column, found)
            for message in messages.values():
                assert message.startswith(f"odd_nans.{column} cannot hold a value of type "), (
                    message
                )
                assert "NaN" in message and "12" not in message, message
