"""Sized text, enum and text-UUID columns: a value is kept by the upsert as the column stores
it, or refused there naming the column, never refused only at the flush (where a later write
of the row in the same batch hid it, or the whole batch failed) nor read differently in its
batch and in a later one. Each expectation was checked against the database (write, commit,
read back)."""

from __future__ import annotations

import datetime
import enum
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from projections.api import UnstorableValueError
from projections.sql_tx import SqlTx
from tests.batch_value_helpers import outcomes, problems, read_back, refused, store

_SIZED: list[Any] = [
    "abc",
    "ab",
    "abcd",
    "abc  ",  # excess trailing blanks: cut
    "abc   x",
    "éé  ",  # lengths in characters
    "ééé",
    "abc\t",  # only blanks are cut
    "abc \u00a0",
    "",
    "  ",
    5,
    12345,
    2.5,
    True,
    Decimal("1.50"),
    datetime.date(2024, 1, 2),
    None,
]


def _sized_tables(metadata: sa.MetaData) -> list[sa.Table]:
    def columns() -> list[sa.Column[Any]]:
        return [
            sa.Column("id", sa.Text, primary_key=True),
            sa.Column("v", sa.String(3)),
            sa.Column("c", sa.CHAR(3)),
            sa.Column("one", sa.CHAR()),  # CHAR is CHAR(1)
            sa.Column("n", sa.NCHAR(3)),
            sa.Column("u", sa.Unicode(3)),
        ]

    plain = sa.Table("sized_plain", metadata, *columns())  # the driver-level plan
    mixed = sa.Table("sized_mixed", metadata, *columns(), sa.Column("doc", sa.JSON))
    return [plain, mixed]


# What PostgreSQL stores, per column kind (checked on the server): text longer than the
# column is refused unless the excess is blanks; CHAR(n) is blank-padded; a number, boolean
# or date is stored as its text.
_PG_VARCHAR = {
    "'abc'": "abc",
    "'ab'": "ab",
    "'abc  '": "abc",
    "'éé  '": "éé ",
    "'ééé'": "ééé",
    "''": "",
    "'  '": "  ",
    "5": "5",
    "2.5": "2.5",
    "None": None,
}
_PG_CHAR = {
    **_PG_VARCHAR,
    "'ab'": "ab ",
    "''": "   ",
    "'  '": "   ",
    "5": "5  ",
}
_PG_ONE = {"''": " ", "'  '": " ", "5": "5", "None": None}


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_sized_text_is_cut_padded_or_refused_by_the_upsert_as_the_column_stores_it(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """PostgreSQL refused over-long text only at the flush and cut excess trailing blanks
    without a word (read ``'abc  '`` in its batch, ``'abc'`` later); SQLite keeps any length."""
    metadata = sa.MetaData()
    tables = _sized_tables(metadata)
    with store(database_for(kind), metadata) as engine:
        found = {
            (table.name, column): outcomes(engine, table, column, _SIZED)
            for table in tables
            for column in ("v", "c", "one", "n", "u")
        }
    assert {key: problems(each) for key, each in found.items() if problems(each)} == {}
    for (table, column), each in found.items():
        if kind == "sqlite":
            # Lengths are not enforced; only what sqlite3 binds no text of is refused.
            assert set(refused(each)) == {"Decimal('1.50')"}, (table, column)
            stored = read_back(each)
            assert stored["'abc  '"] == "abc  " and stored["5"] == "5", (table, column)
            continue
        expected = {"v": _PG_VARCHAR, "u": _PG_VARCHAR, "c": _PG_CHAR, "n": _PG_CHAR}
        assert read_back(each) == expected.get(column, _PG_ONE), (table, column)
        length = 1 if column == "one" else 3
        sql = f"character{' varying' if column in ('v', 'u') else ''}({length})"
        for value, message in refused(each).items():
            assert message.startswith(f"{table}.{column} cannot hold a value of type "), message
            assert value not in message, message
            assert f"value too long for type {sql}" in message, message


class Color(enum.Enum):
    RED = "red"
    GREEN = 2


class Size(enum.StrEnum):
    S = "small"
    L = "large"


def _enum_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "batch_enums",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("native", sa.Enum("a", "b", name="batch_ab")),
        sa.Column("plain", sa.Enum("a", "b", native_enum=False)),
        sa.Column("cls", sa.Enum(Color, name="batch_color")),
        sa.Column("cls_plain", sa.Enum(Color, native_enum=False)),
        sa.Column(
            "by_value",
            sa.Enum(Color, name="batch_color_values", values_callable=lambda e: ["red", "2"]),
        ),
        sa.Column("size", sa.Enum(Size, name="batch_size")),
    )


_ENUM_VALUES: list[Any] = [
    "a",
    "c",
    "A",
    " a",
    "RED",
    "red",
    "GREEN",
    Color.RED,
    Color.GREEN,
    2,
    Size.S,
    "S",
    "small",
    True,
    None,
]
# What each column stores and reads back (checked on both databases); any other value is
# refused by the upsert naming the column and its values. On PostgreSQL a native enum
# refused it at the flush; a non-native one (and SQLite) stored it, and every later read of
# the row failed (LookupError).
_ENUM_STORED: dict[str, dict[str, Any]] = {
    "native": {"'a'": "a", "None": None},
    "plain": {"'a'": "a", "None": None},
    "cls": {
        "'RED'": Color.RED,
        "'GREEN'": Color.GREEN,
        "<Color.RED: 'red'>": Color.RED,
        "<Color.GREEN: 2>": Color.GREEN,
        "None": None,
    },
    "by_value": {"'red'": Color.RED, "<Color.RED: 'red'>": Color.RED, "None": None},
    "size": {"<Size.S: 'small'>": Size.S, "'S'": Size.S, "'small'": Size.S, "None": None},
}
_ENUM_STORED["cls_plain"] = _ENUM_STORED["cls"]
_ENUM_STORED["by_value"]["<Color.GREEN: 2>"] = Color.GREEN


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_an_enum_column_keeps_its_values_as_sqlalchemy_reads_them_and_refuses_others(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """A name written for an enum class's column reads back as the member in its batch too
    (``'RED'`` was read ``'RED'``, later ``Color.RED``)."""
    metadata = sa.MetaData()
    table = _enum_table(metadata)
    with store(database_for(kind), metadata) as engine:
        found = {column: outcomes(engine, table, column, _ENUM_VALUES) for column in _ENUM_STORED}
    assert {column: problems(each) for column, each in found.items() if problems(each)} == {}
    for column, each in found.items():
        assert read_back(each) == _ENUM_STORED[column], column
        allowed = {
            "native": "'a', 'b'",
            "plain": "'a', 'b'",
            "cls": "'RED', 'GREEN'",
            "cls_plain": "'RED', 'GREEN'",
            "by_value": "'red', '2'",
            "size": "'S', 'L'",
        }[column]
        for value, message in refused(each).items():
            assert message.startswith(f"batch_enums.{column} cannot hold a value of type "), message
            assert f"hold {value}" not in message, message
            assert f"one of {allowed}" in message, message


_UUID = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
_UUID_TEXTS: list[Any] = [
    _UUID,
    _UUID.upper(),
    _UUID.replace("-", ""),
    "{" + _UUID + "}",
    "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
    uuid.UUID(_UUID),
]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_text_uuid_column_reads_the_canonical_text_in_its_batch_as_later(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """``Uuid(as_uuid=False)`` reads back ``str(uuid)``: an upper-case text was read as
    written in its batch (and on SQLite stored so: a later ``get`` by the canonical text
    missed it); a ``uuid.UUID`` failed at the flush on SQLite (AttributeError), text that is
    no UUID was stored there and no later read succeeded."""
    metadata = sa.MetaData()
    table = sa.Table(
        "batch_text_uuids",
        metadata,
        sa.Column("id", sa.Uuid(as_uuid=False), primary_key=True),
        sa.Column("ref", sa.Uuid(as_uuid=False)),
    )
    with store(database_for(kind), metadata) as engine:
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table})
            for n, form in enumerate(_UUID_TEXTS):
                tx.upsert(table, {"id": form, "ref": _UUID_TEXTS[-1 - n]})
            for column, value in [("ref", "abc"), ("ref", " " + _UUID), ("id", 5)]:
                with pytest.raises(UnstorableValueError, match=rf"^batch_text_uuids\.{column} "):
                    tx.upsert(table, {"id": _UUID, column: value})
            in_batch = [tx.get(table, form) for form in _UUID_TEXTS]
            tx.flush()
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table})
            later = [tx.get(table, form) for form in _UUID_TEXTS]
            rows = [tuple(row) for row in conn.execute(sa.select(table))]
    assert in_batch == later == [{"id": _UUID, "ref": _UUID}] * len(_UUID_TEXTS)
    assert rows == [(_UUID, _UUID)]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_column_with_a_variant_for_the_database_converts_as_that_variant(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """``Text().with_variant(JSONB(), "postgresql")`` was converted as text on PostgreSQL
    too: a dict was refused (psycopg sends no dict as text), where the column stores it.
    (A JSON column beside it: SQLAlchemy's statements write the row.)"""
    metadata = sa.MetaData()
    table = sa.Table(
        "batch_variants",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("doc", sa.Text().with_variant(postgresql.JSONB(), "postgresql")),
        sa.Column("other", sa.JSON),
    )
    values: list[Any] = [{"b": 1, "a": [1, 2]}, "text", 5]
    with store(database_for(kind), metadata) as engine:
        found = outcomes(engine, table, "doc", values)
    assert problems(found) == []
    if kind == "postgresql":  # JSONB: keys ordered as PostgreSQL orders them
        expected = {repr(values[0]): {"a": [1, 2], "b": 1}, "'text'": "text", "5": 5}
        assert read_back(found) == expected
    else:  # TEXT: a dict is refused (sqlite3 binds none), a number kept as its text
        assert read_back(found) == {"'text'": "text", "5": "5"}
