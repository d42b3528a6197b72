"""Values PostgreSQL refuses, refused by the upsert naming the column (not at the flush, which
failed the whole batch), and lookups of integers no row of a column can have: a NUL in text
or ``JSONB``, text that is no float, ``tx.find`` by an integer outside a column's range. Each
expectation was checked against the database (write, commit, read back)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from projections.sql_tx import SqlTx
from tests.batch_value_helpers import outcomes, problems, read_back, refused, store


class Label(str):
    """A str subclass, as a handler's own text type might be."""


_NUL_TEXTS: list[Any] = ["a\x00b", "\x00", Label("a\x00"), "ab", None]
_NUL_DOCUMENTS: list[Any] = [
    "a\x00",
    {"k": "a\x00"},
    {"a\x00": 1},
    ["x", ["\x00"]],
    {"k": ["fine"]},
    "fine",
]
_NUL_ARRAYS: list[Any] = [["a\x00"], [["x"], ["\x00"]], ["ok", None]]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_nul_in_text_or_jsonb_is_refused_by_the_upsert_naming_the_column(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """PostgreSQL text, or an array of it, holds no NUL (psycopg refused it at the flush,
    failing the whole batch), nor does ``JSONB`` hold ``\\u0000`` in a string or a key
    ("unsupported Unicode escape sequence"); ``JSON`` (text) and SQLite keep it, read alike in
    and after the batch."""
    metadata = sa.MetaData()
    table = sa.Table(
        "nul_values",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("t", sa.Text),
        sa.Column("v", sa.String(5)),
        sa.Column("c", sa.CHAR(3)),
        sa.Column("doc", sa.JSON),
        sa.Column("bin", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
        sa.Column("tags", postgresql.ARRAY(sa.Text).with_variant(sa.JSON(), "sqlite")),
    )
    with store(database_for(kind), metadata) as engine:
        texts = {column: outcomes(engine, table, column, _NUL_TEXTS) for column in "tvc"}
        documents = {col: outcomes(engine, table, col, _NUL_DOCUMENTS) for col in ("doc", "bin")}
        tags = outcomes(engine, table, "tags", _NUL_ARRAYS)
    found = {**texts, **documents, "tags": tags}
    assert {column: problems(each) for column, each in found.items() if problems(each)} == {}
    if kind == "sqlite":
        assert {column: refused(each) for column, each in found.items() if refused(each)} == {}
        return
    nul_texts = {repr(value) for value in _NUL_TEXTS if value and "\x00" in value}
    for column in "tvc":
        assert set(refused(texts[column])) == nul_texts, column
    assert refused(documents["doc"]) == {}
    assert read_back(documents["doc"])[repr({"a\x00": 1})] == {"a\x00": 1}
    assert set(refused(documents["bin"])) == {repr(value) for value in _NUL_DOCUMENTS[:4]}
    assert set(refused(tags)) == {repr(value) for value in _NUL_ARRAYS[:2]}
    for message in [*refused(texts["t"]).values(), *refused(documents["bin"]).values()]:
        assert "NUL" in message, message


_NO_FLOATS = ["abc", "1_000", "１２", "1e", "", " ", "0x", "1.5.1"]
_OUT_OF_RANGE = ["1e400", "-1e400", "2e-324", "0x1p2000"]
_FLOATS = ["NaN", " Infinity ", "-inf", "1.", "0x1.8p3", "1e-310", " 1.5 ", "0e-400", "-0"]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_text_no_database_reads_as_a_float_is_refused_by_the_upsert_naming_the_column(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """Text PostgreSQL reads as no float ('abc': "invalid input syntax"; '1e400': "out of
    range") was refused only at the flush, failing the whole batch. SQLite float columns take
    what PostgreSQL's double precision takes, as the float PostgreSQL reads (hexadecimal too),
    and refuse the rest (Python's ``float()`` read '1_000' and '１２', not '0x1.8p3')."""
    metadata = sa.MetaData()
    table = sa.Table(
        "float_texts",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("d", sa.Float),
        sa.Column("r", sa.REAL),
        sa.Column("dp", sa.Double),
    )
    values = [*_NO_FLOATS, *_OUT_OF_RANGE, *_FLOATS]
    with store(database_for(kind), metadata) as engine:
        found = {column: outcomes(engine, table, column, values) for column in ("d", "r", "dp")}
    assert {column: problems(each) for column, each in found.items() if problems(each)} == {}
    expected = set(map(repr, _NO_FLOATS + _OUT_OF_RANGE))
    if kind == "sqlite":
        expected.add(repr("NaN"))  # stored as NULL
    for column in ("d", "dp") if kind == "postgresql" else ("d", "r", "dp"):
        assert set(refused(found[column])) == expected, column
        stored = read_back(found[column])
        assert stored[repr("0x1.8p3")] == 12.0 and stored[repr(" 1.5 ")] == 1.5
        assert stored[repr("-inf")] == -math.inf and stored[repr("1e-310")] == 1e-310
    if kind == "postgresql":  # REAL: single precision's range
        assert set(refused(found["r"])) == expected | {repr("1e-310")}
    for message in refused(found["d"]).values():
        assert "float" in message or "range" in message, message


def _counted(metadata: sa.MetaData) -> list[sa.Table]:
    return [
        sa.Table(
            f"counted_{name}",
            metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("n", kind),
        )
        for name, kind in (("small", sa.SmallInteger), ("int", sa.Integer), ("big", sa.BigInteger))
    ]


_BIG_OUT = [2**63, -(2**63) - 1, 2**70]
_FIND_OUT = {
    "postgresql": {
        "counted_small": [2**15, -(2**15) - 1, *_BIG_OUT],
        "counted_int": [2**31, -(2**31) - 1, *_BIG_OUT],
        "counted_big": _BIG_OUT,
    },
    "sqlite": {name: _BIG_OUT for name in ("counted_small", "counted_int", "counted_big")},
}


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_find_by_an_integer_outside_its_column_finds_nothing_and_the_batch_goes_on(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """``tx.find`` by an integer no row of its column can have failed (PostgreSQL: an
    unnamed error that aborted the transaction; SQLite: an OverflowError), where ``get``,
    ``prefetch`` and ``delete`` find no row: it finds none, and the batch goes on."""
    metadata = sa.MetaData()
    tables = _counted(metadata)
    with store(database_for(kind), metadata) as engine:
        for table in tables:
            for value in _FIND_OUT[kind][table.name]:
                with engine.begin() as conn:
                    tx = SqlTx(conn, {table: table})
                    tx.upsert(table, {"id": 1, "n": 1})
                    assert tx.find(table, n=value) == [], (table.name, value)
                    assert tx.find(table, id=1, n=value) == [], (table.name, value)
                    assert tx.find(table, n=1) == [{"id": 1, "n": 1}]
                    tx.upsert(table, {"id": 2, "n": 2})
                    tx.flush()
                with engine.begin() as conn:
                    rows = conn.execute(sa.select(table).order_by(table.c.id)).all()
                    assert [tuple(r) for r in rows] == [(1, 1), (2, 2)]
                    conn.execute(table.delete())


_CONTAINERS: list[Any] = [["a\x00"], ("a\x00",), {"k": "a\x00"}, [["a"], ["\x00"]], ["ok"], {}]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_container_into_a_scalar_text_or_enum_column_is_refused_as_one(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """A list, tuple or dict for a scalar text column is refused for what it is (psycopg sends
    it as an array, a record...), even holding a text with a NUL: the container is the mistake.
    An ``Enum`` column refused a list or dict with ``TypeError: unhashable type`` (no column
    named, the event not parked): refused naming the column, as other values it takes not."""
    metadata = sa.MetaData()
    table = sa.Table(
        "contained",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("t", sa.Text),
        sa.Column("v", sa.String(5)),
        sa.Column("c", sa.CHAR(3)),
        sa.Column("e", sa.Enum("a", "b", name="contained_e")),
        sa.Column("ne", sa.Enum("a", "b", native_enum=False)),
    )
    columns = ["e", "ne"] if kind == "sqlite" else ["t", "v", "c", "e", "ne"]
    with store(database_for(kind), metadata) as engine:
        found = {column: outcomes(engine, table, column, _CONTAINERS) for column in columns}
    assert {column: problems(each) for column, each in found.items() if problems(each)} == {}
    for column, each in found.items():
        messages = refused(each)
        assert set(messages) == set(map(repr, _CONTAINERS)), column
        for message in messages.values():
            assert "NUL" not in message, message
            assert "psycopg sends a" in message or "Enum column takes" in message, message
