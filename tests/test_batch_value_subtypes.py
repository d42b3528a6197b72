"""Text of a ``str`` subclass (a handler's own text type, ``numpy.str_``, a ``(str, Enum)``
member) and ``numpy.bool_`` into number, date and time columns: converted or refused as their
plain ``str`` and ``bool`` are, so a handler reads in its batch what a later batch reads and
no such value fails the whole batch at the flush. Each expectation was checked against the
database (write, commit, read back)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from projections.sql_tx import SqlTx
from tests.batch_value_helpers import outcomes, problems, read_back, refused, store


class Label(str):
    """A str subclass, as a handler's own text type might be."""


class Code(str, enum.Enum):  # noqa: UP042 - its str() is not its text: psycopg sends the text
    TWELVE = "12"
    WORD = "word"


def _table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "subtype_values",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("i", sa.Integer),
        sa.Column("b", sa.BigInteger),
        sa.Column("n", sa.Numeric(10, 2)),
        sa.Column("f", sa.Float),
        sa.Column("r", sa.REAL),
        sa.Column("t", sa.Text),
        sa.Column("c", sa.CHAR(3)),
        sa.Column("ts", sa.DateTime(timezone=True)),
        sa.Column("d", sa.Date),
    )


def _check(database: str, values: dict[str, list[Any]]) -> dict[str, Any]:
    metadata = sa.MetaData()
    table = _table(metadata)
    with store(database, metadata) as engine:
        found = {column: outcomes(engine, table, column, each) for column, each in values.items()}
    assert {column: problems(each) for column, each in found.items() if problems(each)} == {}
    return found


_NUMBER_TEXTS: list[Any] = [Label("12"), Label("1.5"), Label("abc"), Label("a\x00"), Code.TWELVE]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_text_of_a_str_subclass_is_converted_or_refused_as_its_plain_text(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """``Label("12")`` into an integer column was kept as ``Label("12")`` in its batch (a later
    batch reads 12); ``Label("abc")`` or a NUL in one, into a PostgreSQL number or date column,
    failed the whole batch at the flush."""
    columns = ("i", "b", "n", "f", "r")
    values = {column: _NUMBER_TEXTS for column in columns}
    values |= {"ts": [Label("2024-01-02"), Label("abc")], "d": [Label("2024-01-02")]}
    found = _check(database_for(kind), values)
    for column in ("i", "b"):
        stored = read_back(found[column])
        assert stored[repr(Label("12"))] == 12 and type(stored[repr(Label("12"))]) is int
        assert stored[repr(Code.TWELVE)] == 12
    for column in ("f", "r"):
        assert read_back(found[column])[repr(Label("1.5"))] == 1.5
    if kind == "postgresql":
        for column in columns:
            assert repr(Label("abc")) in refused(found[column]), column
            assert repr(Label("a\x00")) in refused(found[column]), column
        assert repr(Label("abc")) in refused(found["ts"])


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_numpy_bool_is_kept_or_refused_as_a_bool(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """``numpy.bool_`` was left as it is: in its batch ``np.True_`` where a later batch read 1
    (a PostgreSQL INTEGER), ``'true'`` (text) or, on SQLite, a BLOB ``b'\\x01'``; into a
    PostgreSQL BIGINT, a float or a CHAR(3) column it failed the whole batch at the flush."""
    np = pytest.importorskip("numpy", reason="numpy is not installed in this venv")
    flags = [np.True_, np.False_]
    found = _check(database_for(kind), {c: flags for c in ("i", "b", "n", "f", "t", "c")})
    assert read_back(found["i"])[repr(np.True_)] == 1
    if kind == "postgresql":
        assert read_back(found["t"])[repr(np.True_)] == "true"
        for column in ("b", "n", "f", "c"):
            assert set(refused(found[column])) == set(map(repr, flags)), column
    else:
        assert all(type(value) is not bytes for value in read_back(found["t"]).values())


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_find_by_a_numpy_integer_outside_its_column_finds_nothing(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """``tx.find`` by a numpy integer no row of its column can have failed the event
    (PostgreSQL: "smallint out of range", which aborted the transaction), where an ``int``
    finds nothing: it finds none, and the batch goes on."""
    np = pytest.importorskip("numpy", reason="numpy is not installed in this venv")
    metadata = sa.MetaData()
    columns = {"small": sa.SmallInteger, "int": sa.Integer, "big": sa.BigInteger}
    table = sa.Table(
        "numpy_finds",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        *(sa.Column(name, kind) for name, kind in columns.items()),
    )
    outside = {"small": np.int32(2**15), "int": np.int64(-(2**31) - 1), "big": np.uint64(2**63)}
    with store(database_for(kind), metadata) as engine:
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table})
            tx.upsert(table, {"id": 1, "small": 1, "int": 1, "big": 1})
            for name, value in outside.items():
                if kind == "postgresql" or name == "big":
                    assert tx.find(table, **{name: value}) == [], name
            assert tx.get(table, np.int64(2**31)) is None
            assert tx.find(table, small=np.int16(1)) == [dict.fromkeys(["id", *columns], 1)]
            tx.upsert(table, {"id": 2, "small": 2, "int": 2, "big": 2})
            tx.flush()
        with engine.begin() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 2
