"""A projection's own ``TypeDecorator`` column types: a value is read in its batch as a later
batch reads it (through the decorator's ``process_bind_param`` and ``process_result_value``),
and keys are the rows the database finds (a decorator over ``citext`` or ``NOCASE``, or one
that lower-cases). Before, a batch kept the value as written ('A@X' read 'A@X' in its batch,
'a@x' after) and its keys as Python compares them (two rows in a batch, one after)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from outbox.db import create_engine
from projections.sql_tx import SqlTx
from tests.cross_kind_helpers import SHAPES, write_and_read
from tests.key_scenarios import Op, disagreements, key_tables


class LowerText(TypeDecorator[str]):
    """E-mail addresses stored lower-cased."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError(f"an address is text, not {type(value).__name__}")
        return None if value is None else value.lower()


class Cents(TypeDecorator[Decimal]):
    """Amounts stored as whole cents, read back as a Decimal of euros."""

    impl = sa.BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else int(Decimal(value) * 100)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else Decimal(value) / 100


class Tags(TypeDecorator[list[str]]):
    """A set of tags stored as sorted comma-separated text, read back as a list."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else ",".join(sorted(set(value)))

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else value.split(",")


class Stripped(TypeDecorator[str]):
    """Nested: blanks stripped, then lower-cased by the decorator it wraps."""

    impl = LowerText
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else value.strip()


class Alias(TypeDecorator[str]):
    """A decorator that changes no value: the column is its impl's."""

    impl = sa.Text
    cache_ok = True

    def __init__(self, impl: sa.types.TypeEngine[Any]) -> None:
        super().__init__()
        self.impl = impl  # type: ignore[assignment]


_VALUES: dict[str, tuple[Callable[[], sa.types.TypeEngine[Any]], Any, Any]] = {
    # column type, value written, as read back
    "lower": (LowerText, "Ann@Example.ORG", "ann@example.org"),
    "cents": (Cents, Decimal("12.345"), Decimal("12.34")),
    "tags": (Tags, ["b", "a", "b"], ["a", "b"]),
    "nested": (Stripped, "  Ann@Example.ORG ", "ann@example.org"),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", list(_VALUES))
@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_a_decorated_value_is_read_in_its_batch_as_after_it(
    dialect: str, kind: str, shape: str, database_for: Callable[[str], str]
) -> None:
    column_type, value, read_back = _VALUES[kind]
    table = sa.Table(
        f"decorated_{kind}",
        sa.MetaData(),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("v", column_type()),
    )
    engine = create_engine(database_for(dialect))
    table.metadata.create_all(engine)
    try:
        assert write_and_read(engine, table, "v", value, shape, value) is None
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table})
            tx.upsert(table, {"id": "a", "v": value})
            assert tx.get(table, "a") == {"id": "a", "v": read_back}
    finally:
        engine.dispose()


def test_a_decorator_refusing_a_value_refuses_it_when_written(
    database_for: Callable[[str], str],
) -> None:
    """Its error comes from the handler's upsert (the event's failure), not from the
    batch's flush; the row never joins the batch."""
    table = sa.Table(
        "decorated_refusal",
        sa.MetaData(),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("email", LowerText),
    )
    engine = create_engine(database_for("postgresql"))
    table.metadata.create_all(engine)
    try:
        with engine.begin() as conn:
            tx = SqlTx(conn, {table: table})
            tx.upsert(table, {"id": "a", "email": "A@X"})
            with pytest.raises(ValueError, match="an address is text, not int"):
                tx.upsert(table, {"id": "b", "email": 7})
            assert tx.get(table, "b") is None
            tx.flush()
        with engine.connect() as conn:
            assert conn.execute(sa.select(table)).all() == [("a", "a@x")]
    finally:
        engine.dispose()


_KEY_SCENARIO: list[list[Op]] = [
    [("upsert", "Ab", 1), ("get", "aB"), ("upsert", "aB", 2), ("get", "AB")],
    [("prefetch", ["ab", "AB"]), ("get", "ab"), ("delete", "AB"), ("get", "ab")],
    [("upsert", "ab", 3), ("get", "Ab")],
]

_KEY_TYPES: dict[str, tuple[str, Callable[[], sa.types.TypeEngine[Any]]]] = {
    "citext_alias": ("postgresql", lambda: Alias(postgresql.CITEXT())),
    "nocase_alias": ("sqlite", lambda: Alias(sa.String(collation="NOCASE"))),
    "lower_postgresql": ("postgresql", LowerText),
    "lower_sqlite": ("sqlite", LowerText),
}


def _shown(row: dict[str, Any] | None) -> tuple[str, int] | None:
    return None if row is None else (row["k"], row["v"])


@pytest.mark.parametrize("kind", list(_KEY_TYPES))
def test_a_decorated_key_is_the_row_its_database_finds(
    kind: str, database_for: Callable[[str], str]
) -> None:
    dialect, key_type = _KEY_TYPES[kind]
    tables = key_tables("decorated", key_type)
    engine = create_engine(database_for(dialect))
    if dialect == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE EXTENSION citext")
    tables[0].metadata.create_all(engine)
    try:
        assert disagreements(engine, tables, _KEY_SCENARIO, _shown) == []
    finally:
        engine.dispose()
