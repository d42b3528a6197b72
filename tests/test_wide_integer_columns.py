"""An integer a SQL column cannot keep is refused when the handler writes it, naming the
column and its width, before the row joins the batch: a handler that catches
``WideIntegerError`` writes its fallback and loses nothing; an event that does not is
parked with that reason (not the server's "bigint out of range", which names no column)."""

from __future__ import annotations

import sys
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


@pytest.mark.parametrize("batch_size", [1, 50])
def test_postgresql_integer_columns_refuse_by_their_width_naming_the_column(
    batch_size: int, pg_database: Callable[[], str]
) -> None:
    """A Decimal or a string of digits that PostgreSQL would read as an integer past the
    column's width, an array element, an INTEGER past 32 bits: each refused naming it."""
    events = [
        ("decimal", "Put", {"col": "whole", "v": BIG, "as": "decimal"}),
        ("text", "Put", {"col": "whole", "v": BIG, "as": "text"}),
        ("array", "Put", {"col": "wholes", "v": -BIG, "as": "array"}),
        ("int4", "Put", {"col": "i4", "v": 2**40}),
        ("int2", "Put", {"col": "i2", "v": -(2**20)}),
        ("fits", "Put", {"col": "i4", "v": -(2**31)}),
        ("fits", "Put", {"col": "i2", "v": 2**15 - 1}),
        ("fits", "Put", {"col": "wholes", "v": 2**63 - 1, "as": "array"}),
    ]
    rows, parked = _apply("postgresql", pg_database(), events, batch_size)

    fits = {"id": "fits", "i4": -(2**31), "i2": 2**15 - 1, "wholes": [[1, 2], [3, 2**63 - 1]]}
    assert rows == {"fits": fits}  # the lane went on
    wanted = {
        "decimal": "wide.whole cannot hold a value of type int: a BIGINT column holds 64-bit",
        "text": "wide.whole cannot hold a value of type int: a BIGINT column holds 64-bit",
        "array": "wide.wholes[1][1] cannot hold a value of type int: an array of BIGINT holds "
        "64-bit integers",
        "int4": "wide.i4 cannot hold a value of type int: an INTEGER column holds 32-bit",
        "int2": "wide.i2 cannot hold a value of type int: a SMALLINT column holds 16-bit",
    }
    assert sorted(parked) == sorted(wanted)
    for account, reason in wanted.items():
        assert reason in parked[account], parked[account]
        for value in (BIG, 2**40, 2**20):  # never the value: it may be a secret
            assert str(value) not in parked[account], parked[account]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_float_column_keeps_the_nearest_double_on_both_and_refuses_one_past_its_range(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """As for any integer past 2**53: a float column holds doubles (PostgreSQL and SQLite
    alike), an integer past a double's range is refused naming the column."""
    events = [
        ("near", "Put", {"col": "ratio", "v": BIG + 1}),
        ("past", "Put", {"col": "ratio", "exp": 400, "as": "power"}),
    ]
    if kind == "postgresql":
        events.append(("single", "Put", {"col": "single", "v": 2**128}))
    rows, parked = _apply(kind, database_for(kind), events, 50)

    assert rows == {"near": {"id": "near", "ratio": float(BIG)}}
    assert "wide.ratio cannot hold a value of type int: " in parked["past"], parked["past"]
    assert "a float column holds doubles, and it is past their range" in parked["past"]
    if kind == "postgresql":
        assert "wide.single cannot hold a value of type int: " in parked["single"]
        assert "3402823669209384634633746074317" not in parked["single"]
        assert "single-precision" in parked["single"]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
@pytest.mark.parametrize("batch_size", [1, 50])
def test_a_json_column_keeps_an_integer_past_a_doubles_range_and_refuses_one_too_long(
    kind: str, batch_size: int, database_for: Callable[[str], str]
) -> None:
    """10**309 used to be written but never read back (the next event reading the row was
    parked); past Python's digit limit, the value is refused naming the column."""
    limit = sys.get_int_max_str_digits()
    events = [
        ("a1", "Put", {"col": "doc", "exp": 309, "as": "document"}),
        ("a1", "Copied", {}),
        ("a2", "Put", {"col": "doc", "exp": limit, "as": "document"}),
        ("a3", "Put", {"col": "doc", "exp": 2, "as": "document"}),
    ]
    rows, parked = _apply(kind, database_for(kind), events, batch_size)

    assert rows["a1"]["doc"] == rows["a1-copy"]["doc"] == {"n": [10**309, 0.5]}
    assert type(rows["a1-copy"]["doc"]["n"][0]) is int
    assert rows["a3"]["doc"] == {"n": [100, 0.5]}
    assert sorted(parked) == ["a2"]
    assert (
        f"wide.doc cannot hold a JSON value holding an integer of more than {limit} digits"
        in (parked["a2"])
    )
    assert "0" * 29 not in parked["a2"], parked["a2"]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_decimal_in_an_integer_column_is_stored_as_postgresql_stores_it(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """Rounded half away from zero on both; SQLite's driver refused any Decimal ("type
    'decimal.Decimal' is not supported", naming no column). Past 64 bits, or not a number:
    refused naming the column (PostgreSQL's own refusal of NaN named none either)."""
    events = [
        ("half", "Put", {"col": "whole", "v": "2.5", "as": "decimal"}),
        ("minus", "Put", {"col": "whole", "v": "-2.5", "as": "decimal"}),
        ("power", "Put", {"col": "whole", "v": "1E+3", "as": "decimal"}),
        ("wide", "Put", {"col": "whole", "v": "1E+20", "as": "decimal"}),
        ("huge", "Put", {"col": "whole", "v": "1E+3000000", "as": "decimal"}),
        ("nan", "Put", {"col": "whole", "v": "NaN", "as": "decimal"}),
        ("infinite", "Put", {"col": "whole", "v": "-Infinity", "as": "decimal"}),
    ]
    rows, parked = _apply(kind, database_for(kind), events, batch_size=50)

    assert rows == {
        "half": {"id": "half", "whole": 3},
        "minus": {"id": "minus", "whole": -3},
        "power": {"id": "power", "whole": 1000},
    }
    assert sorted(parked) == ["huge", "infinite", "nan", "wide"]
    assert "wide.whole cannot hold a value of type int" in parked["wide"]  # converted, then refused
    assert str(10**20) not in parked["wide"] and "1E+20" not in parked["wide"], parked["wide"]
    # Refused before it is written out as an int (which took minutes): as too wide.
    huge = parked["huge"]
    assert huge.startswith("refused for good, not retried: WideIntegerError"), huge
    assert "wide.whole cannot hold a value of type decimal.Decimal: it is past 64 bits" in huge
    for account in ("nan", "infinite"):
        reason = parked[account]
        assert reason.startswith("refused for good, not retried: UnstorableValueError"), reason
        why = (
            "wide.whole cannot hold a value of type decimal.Decimal: an integer column holds no NaN"
        )
        assert why in reason, reason


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_integers_past_pythons_text_limit_are_refused_naming_the_column(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """A 5000-digit string into an integer column or key, a 5001-digit int into a text
    column: a plain ValueError (Python's 4,300-digit limit) escaped the upsert, taken for a
    transient failure and retried."""
    from outbox.db import create_engine
    from projections.api import UnstorableValueError
    from projections.sql_tx import SqlTx

    metadata = sa.MetaData()
    table = sa.Table(
        "wide_text_limit",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("count", sa.Integer),
        sa.Column("note", sa.Text),
    )
    engine = create_engine(database_for(kind))
    metadata.create_all(engine)
    long_text, long_int = "9" * 5000, 10**5000
    try:
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table})
            for column, value in [("count", long_text), ("id", long_text), ("note", long_int)]:
                with pytest.raises(UnstorableValueError) as refused:
                    tx.upsert(table, {"id": 1, column: value})
                assert str(refused.value).startswith(f"wide_text_limit.{column} cannot hold ")
                assert len(str(refused.value)) < 400
            # A key no row of the column can have finds none (the upsert refuses it).
            assert tx.get(table, long_text) is None
            tx.upsert(table, {"id": " 0042 ", "count": "0" * 5000 + "7"})
            assert tx.get(table, 42) == {"id": 42, "count": 7, "note": None}
    finally:
        engine.dispose()
