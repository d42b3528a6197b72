"""As tests/test_cross_kind_values.py, for more column types (tests/cross_kind_more_values.py):
every value written into every column, in four batch shapes, is refused by the upsert naming
the column, or read alike in and after its batch; and every value looked up in a table keyed
by such a column (``get``, ``find``, ``delete``) is refused naming the column or finds the
row a batch stored with it, never failing the transaction with a database error.

Found before: a ``LargeBinary`` column took any value (text, numbers...) that the flush then
refused with the whole batch; an ``Enum`` member (neither int nor str) failed the flush of a
PostgreSQL number column and any SQLite integer or text column, and a PostgreSQL text key
read it as the member in its batch and as its name after; SQLite's ``INTEGER PRIMARY KEY``
(the rowid) took text, floats, dates and bytes the flush refused ("datatype mismatch"); a
``VARCHAR(n)``/``CHAR(n)`` key looked up with a boolean, a number, a date, a time, an
interval or a UUID whose text is longer than the column made PostgreSQL refuse the query
("operator does not exist: character varying = boolean"), aborting the transaction; a NaN
key written in a batch was not found by ``get`` in that batch (but was in the next); a
``memoryview`` SQLite text key was read as itself in its batch, as bytes after."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from outbox.db import create_engine
from projections.api import UnstorableValueError
from projections.sql_tx import SqlTx
from tests.cross_kind_helpers import SHAPES, same, write_and_read
from tests.cross_kind_more_values import COLUMNS, KEYS, VALUES, Colour, own

_KINDS = ["postgresql", "sqlite"]


@pytest.mark.parametrize("kind", _KINDS)
def test_no_value_is_refused_only_at_the_flush(
    kind: str, database_for: Callable[[str], str]
) -> None:
    table = sa.Table(
        "more_kinds",
        sa.MetaData(),
        sa.Column("id", sa.Text, primary_key=True),
        *(sa.Column(name, column_type) for name, column_type in COLUMNS.items()),
    )
    engine = create_engine(database_for(kind))
    table.metadata.create_all(engine)
    found = []
    try:
        for column in COLUMNS:
            for value in [*VALUES, own(kind, column)]:
                for shape in SHAPES:
                    wrong = write_and_read(
                        engine, table, column, value, shape, own(engine.dialect.name, column)
                    )
                    if wrong is not None:
                        found.append((column, value, shape, wrong))
    finally:
        engine.dispose()
    assert found == [], "\n".join(map(repr, found))


def _looked_up(engine: sa.Engine, table: sa.Table, mine: Any, value: Any) -> list[str]:
    """What went wrong looking up ``value`` in ``table`` (which holds a row keyed ``mine``),
    then storing a row keyed by it and looking it up in the batch and in a later one."""
    wrong = []
    for how in ("get", "find", "find_other", "delete"):
        try:
            with engine.begin() as conn:
                tx = SqlTx(conn, {table: table})
                try:
                    if how == "get":
                        tx.get(table, value)
                    elif how == "find":
                        tx.find(table, k=value)
                    elif how == "find_other":
                        tx.find(table, c=value)
                    else:
                        tx.delete(table, value)
                        tx.flush()
                except UnstorableValueError as exc:
                    assert str(exc).startswith(f"{table.name}.k") or how == "find_other", exc
                except ValueError as exc:  # a list or dict given as a key: its own error
                    assert "does not match primary key" in str(exc), exc
                assert how == "delete" or tx.get(table, mine) is not None  # still usable
                conn.rollback()
        except Exception as exc:  # noqa: BLE001 - listed by the test
            wrong.append(f"{how}: {type(exc).__name__}: {exc}"[:200])
    if isinstance(value, list | tuple | dict):
        return wrong  # no key (a tuple is a key of several columns)
    with engine.begin() as conn:
        conn.execute(table.delete())
    try:
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table})
            try:
                tx.upsert(table, {"k": value, "c": value})
            except UnstorableValueError:
                return wrong
            in_batch = tx.get(table, value)
            tx.flush()
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table})
            later = tx.get(table, value)
            found = tx.find(table, c=value)
        if in_batch is None or later is None or not same(in_batch["k"], later["k"]):
            wrong.append(f"get: {in_batch!r} in its batch, {later!r} after")
        elif not any(same(row["k"], later["k"]) for row in found):
            wrong.append(f"find: {found!r}")
    except Exception as exc:  # noqa: BLE001 - listed by the test
        wrong.append(f"stored: {type(exc).__name__}: {exc}"[:200])
    finally:
        with engine.begin() as conn:
            conn.execute(table.delete())
            conn.execute(table.insert().values(k=mine, c=mine))
    return wrong


@pytest.mark.parametrize("kind", _KINDS)
def test_a_key_of_another_kind_is_refused_or_finds_its_row(
    kind: str, database_for: Callable[[str], str]
) -> None:
    engine = create_engine(database_for(kind))
    found = []
    try:
        for name in KEYS:
            table = sa.Table(
                f"keyed_{name}",
                sa.MetaData(),
                sa.Column("k", COLUMNS[name], primary_key=True),
                sa.Column("c", COLUMNS[name]),
            )
            table.metadata.create_all(engine)
            mine = own(kind, name)
            with engine.begin() as conn:
                conn.execute(table.insert().values(k=mine, c=mine))
            for value in VALUES:
                found += [(name, value, wrong) for wrong in _looked_up(engine, table, mine, value)]
    finally:
        engine.dispose()
    assert found == [], "\n".join(map(repr, found))


@pytest.mark.parametrize(
    ("kind", "column", "value", "why"),
    [
        ("postgresql", "blob", "abc", "a binary column takes bytes only, no str"),
        ("sqlite", "blob", 7, "a binary column takes bytes only, no int"),
        ("postgresql", "small", Colour.RED, "psycopg sends an Enum member as its name"),
        ("sqlite", "text", Colour.RED, "sqlite3 binds no Enum member"),
        ("sqlite", "k", "abc", "a SQLite INTEGER PRIMARY KEY is the table's rowid"),
        ("sqlite", "k", 2.5, "takes integers only"),
    ],
)
def test_the_refusal_says_why(
    kind: str, column: str, value: Any, why: str, database_for: Callable[[str], str]
) -> None:
    table = sa.Table(
        "why",
        sa.MetaData(),
        sa.Column("k", sa.Integer, primary_key=True),
        *(sa.Column(name, COLUMNS[name]) for name in ("blob", "small", "text")),
    )
    engine = create_engine(database_for(kind))
    table.metadata.create_all(engine)
    try:
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table})
            with pytest.raises(UnstorableValueError, match=rf"^why\.{column} .*{why}"):
                tx.upsert(table, {"k": 1, column: value})
            tx.upsert(table, {"k": 1, "text": "Colour.RED"})  # the batch goes on
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "column_type", [sa.Float(), sa.Numeric(asdecimal=False), sa.Float(asdecimal=True)]
)
def test_a_nan_key_is_found_in_its_batch(
    column_type: sa.types.TypeEngine[Any], database_for: Callable[[str], str]
) -> None:
    table = sa.Table("nan_keys", sa.MetaData(), sa.Column("k", column_type, primary_key=True))
    engine = create_engine(database_for("postgresql"))
    table.metadata.create_all(engine)
    nan = float("nan")
    try:
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table})
            tx.upsert(table, {"k": nan})
            assert tx.get(table, float("nan")) is not None  # another NaN object
            tx.flush()
        with engine.begin() as conn:
            assert SqlTx(conn, {table: table}).get(table, float("nan")) is not None
    finally:
        engine.dispose()
