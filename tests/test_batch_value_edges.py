"""Values at the edges of what a column holds: each is kept by the upsert as the database
stores it (read alike in its batch and in a later one) or refused there naming the column.
Each expectation was checked against the database (write, commit, read back)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from decimal import Decimal, localcontext
from typing import Any

import pytest
import sqlalchemy as sa

from projections.api import WideIntegerError
from projections.sql_tx import SqlTx
from tests.batch_value_helpers import outcomes, problems, read_back, refused, store

_NINES_30 = 10**30 - 1
_WIDE: list[Any] = [
    _NINES_30,
    -_NINES_30,
    str(_NINES_30),
    Decimal(f"{_NINES_30}.0"),
    Decimal(f"{_NINES_30}.4"),
    10**30,
    str(10**30),
    Decimal(f"{_NINES_30}.5"),  # 10^30 once rounded
]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_numeric_wider_than_the_decimal_context_is_bounded_exactly(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """The bound of a NUMERIC(p, s) with p over 28 was compared in the thread's decimal
    context (28 digits): 10^30 - 1 was rounded to 10^30 and refused as an overflow, though
    PostgreSQL stores it."""
    metadata = sa.MetaData()
    table = sa.Table(
        "wide_numbers",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("n30", sa.Numeric(30, 0)),
        sa.Column("n40", sa.Numeric(40, 10)),
    )
    with store(database_for(kind), metadata) as engine:
        with localcontext(prec=28):
            n30 = outcomes(engine, table, "n30", _WIDE)
            n40 = outcomes(engine, table, "n40", _WIDE)
    assert problems(n30) == [] and problems(n40) == []
    if kind == "sqlite":
        return  # SQLite keeps no precision: what matters is the batch reads as later
    nines = Decimal(_NINES_30)
    assert read_back(n30) == {
        repr(_NINES_30): nines,
        repr(-_NINES_30): Decimal(-_NINES_30),
        repr(str(_NINES_30)): nines,
        repr(Decimal(f"{_NINES_30}.0")): nines,
        repr(Decimal(f"{_NINES_30}.4")): nines,
    }
    over = {repr(10**30), repr(str(10**30))}
    assert set(refused(n30)) == {*over, repr(_WIDE[-1])}  # 10^30 once rounded
    assert set(refused(n40)) == over
    for message in [*refused(n30).values(), *refused(n40).values()]:
        assert "numeric field overflow" in message, message
    assert read_back(n40)[repr(_NINES_30)] == Decimal(f"{_NINES_30}.0000000000")
    assert read_back(n40)[repr(str(_NINES_30))] == Decimal(f"{_NINES_30}.0000000000")
    assert read_back(n40)[repr(_WIDE[-1])] == Decimal(f"{_NINES_30}.5000000000")


class Code(enum.StrEnum):
    A = "a"


class Label(str):
    """A str subclass, as a handler's own text type might be."""


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_text_of_a_str_subclass_is_stored_as_plain_text_padded_in_a_char_column(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """A ``str`` subclass or ``StrEnum`` member in a ``CHAR(n)`` column was not padded (only
    ``type(value) is str`` was): a handler upserting a row under ``Code.A`` found no row
    under ``'a'`` in its batch, though a later batch does."""
    metadata = sa.MetaData()
    table = sa.Table(
        "coded",
        metadata,
        sa.Column("id", sa.CHAR(3), primary_key=True),
        sa.Column("c", sa.CHAR(3)),
    )
    stored = "a  " if kind == "postgresql" else "a"
    with store(database_for(kind), metadata) as engine:
        found = outcomes(engine, table, "c", [Code.A, Label("a"), Label("abc  ")])
        assert problems(found) == []
        assert read_back(found) == {
            repr(Code.A): stored,
            repr(Label("a")): stored,
            repr(Label("abc  ")): "abc" if kind == "postgresql" else "abc  ",
        }
        for key in (Code.A, Label("b")):
            with engine.begin() as conn:
                tx = SqlTx(conn, {table: table})
                tx.upsert(table, {"id": key, "c": key})
                in_batch = tx.get(table, str.__str__(key))
                assert in_batch is not None and in_batch == tx.get(table, key)
                tx.flush()
            with engine.begin() as conn:
                later = SqlTx(conn, {table: table}).get(table, str.__str__(key))
            assert later is not None
            assert repr(in_batch) == repr(later)


def _keyed(metadata: sa.MetaData) -> list[sa.Table]:
    return [
        sa.Table(
            f"keyed_{name}",
            metadata,
            sa.Column("id", kind, primary_key=True, autoincrement=False),
            sa.Column("v", sa.Text),
        )
        for name, kind in (("small", sa.SmallInteger), ("int", sa.Integer), ("big", sa.BigInteger))
    ]


_BIG_OUT = [2**63, -(2**63) - 1, 2**70, Decimal("1E+30")]
_OUT_OF_RANGE = {
    "postgresql": {
        "keyed_small": [2**15, -(2**15) - 1, "40000", "9223372036854775808", *_BIG_OUT],
        "keyed_int": [2**31, -(2**31) - 1, "99999999999", Decimal("2147483648"), *_BIG_OUT],
        "keyed_big": ["9223372036854775808", *_BIG_OUT],
    },
    # SQLite keeps the text of an integer past 64 bits as a REAL: a key some row can have.
    "sqlite": {name: _BIG_OUT for name in ("keyed_small", "keyed_int", "keyed_big")},
}


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_key_outside_its_integer_column_finds_no_row_and_the_batch_goes_on(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """A key no row of its integer column can have failed ``get``, ``prefetch`` and
    ``delete`` (PostgreSQL: an unnamed DataError that aborted the transaction, so every
    later statement failed; SQLite: an OverflowError): it finds no row, deletes nothing; an
    upsert of it is still refused naming the column."""
    metadata = sa.MetaData()
    tables = _keyed(metadata)
    with store(database_for(kind), metadata) as engine:
        for table in tables:
            with engine.begin() as conn:
                conn.execute(table.insert(), [{"id": 1, "v": "one"}, {"id": 2, "v": "two"}])
            for key in _OUT_OF_RANGE[kind][table.name]:
                with engine.begin() as conn:
                    tx = SqlTx(conn, {table: table})
                    assert tx.get(table, key) is None, (table.name, key)
                    tx.prefetch(table, [key, 1])
                    assert tx.get(table, key) is None, (table.name, key)
                    tx.delete(table, key)
                    with pytest.raises(WideIntegerError, match=rf"^{table.name}\.id cannot hold"):
                        tx.upsert(table, {"id": key, "v": "x"})
                    tx.upsert(table, {"id": 3, "v": "three"})
                    tx.flush()
                    assert tx.get(table, 2) == {"id": 2, "v": "two"}  # not prefetched
                    assert tx.get(table, 1) == {"id": 1, "v": "one"}
                with engine.begin() as conn:
                    rows = conn.execute(sa.select(table).order_by(table.c.id)).all()
                    assert [tuple(r) for r in rows] == [(1, "one"), (2, "two"), (3, "three")]
                    conn.execute(table.delete().where(table.c.id == 3))


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_composite_key_with_an_integer_outside_its_column_finds_no_row(
    kind: str, database_for: Callable[[str], str]
) -> None:
    metadata = sa.MetaData()
    pairs = sa.Table(
        "keyed_pairs",
        metadata,
        sa.Column("a", sa.Text, primary_key=True),
        sa.Column("b", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("v", sa.Text),
    )
    key = ("x", 2**31 if kind == "postgresql" else 2**63)
    with store(database_for(kind), metadata) as engine:
        with engine.begin() as conn:
            tx = SqlTx(conn, {pairs: pairs})
            tx.upsert(pairs, {"a": "x", "b": 1, "v": "one"})
            tx.flush()
            assert tx.get(pairs, key) is None
            tx.prefetch(pairs, [key, ("x", 2)])
            tx.delete(pairs, key)
            with pytest.raises(WideIntegerError, match=r"^keyed_pairs\.b cannot hold"):
                tx.upsert(pairs, {"a": "x", "b": key[1], "v": "x"})
            tx.flush()
            assert tx.get(pairs, ("x", 1)) == {"a": "x", "b": 1, "v": "one"}
        with engine.begin() as conn:
            assert [tuple(r) for r in conn.execute(sa.select(pairs))] == [("x", 1, "one")]


# Not "1_000" nor "0x1F": PostgreSQL 16 reads them (15 does not).
_NOT_NUMBERS = ["abc", "１２", "1.5.1", "--1", "1e", "12 34"]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_text_no_database_reads_as_a_number_is_refused_by_the_upsert_naming_the_column(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """PostgreSQL refused text it reads as no number ("invalid input syntax") only at the
    flush, failing the whole batch (or a later write of the row hid it); so did SQLite's
    NUMERIC (SQLAlchemy binds ``float(value)``). An SQLite INTEGER column keeps such text as
    it is: read alike in and after the batch."""
    metadata = sa.MetaData()
    table = sa.Table(
        "texts_as_numbers",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("amount", sa.Numeric(10, 2)),
        sa.Column("count", sa.Integer),
        sa.Column("total", sa.BigInteger),
        sa.Column("free", sa.Numeric),
    )
    with store(database_for(kind), metadata) as engine:
        found = {
            column: outcomes(engine, table, column, [*_NOT_NUMBERS, " 12 "])
            for column in ("amount", "count", "total", "free")
        }
    assert {column: problems(each) for column, each in found.items() if problems(each)} == {}
    for column, each in found.items():
        if kind == "sqlite" and column in ("count", "total"):
            assert refused(each) == {}, column
            continue
        if kind == "sqlite":  # Python's float() reads full-width digits
            assert set(refused(each)) == set(map(repr, _NOT_NUMBERS)) - {"'１２'"}, column
            for message in refused(each).values():
                assert "Python reads none from this text" in message, message
            continue
        assert set(refused(each)) == set(map(repr, _NOT_NUMBERS)), column
        for message in refused(each).values():
            assert "PostgreSQL reads no number from this text" in message, message
