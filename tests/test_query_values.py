"""Filter values of table queries, on SQLite and PostgreSQL: a Python caller's values
(``@query`` code, ``Queries.list``) are sent as they always were, text read as the column's
type; only ``readmodel query --where field:=JSON`` values are held to their column's kind,
exactly (a NUMERIC's digits are not rounded through a float)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from outbox.errors import StoreError
from projections import QueryError
from projections.query_reader import SqlReader, filter_value
from tests.cli_helpers import run_cli, write_config
from tests.shop_helpers import SHOP_PROJECTIONS, Shop, orders_placed
from workers.cli_query import _parse_where

metadata = sa.MetaData()
items = sa.Table(
    "qv_items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("code", sa.String(20)),
    sa.Column("active", sa.Boolean),
    sa.Column("qty", sa.Integer),
    sa.Column("amount", sa.Numeric(20, 2)),
)


@pytest.fixture
def reader(store_url: str) -> Iterator[SqlReader]:
    engine = sa.create_engine(store_url)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            items.insert(),
            [
                {"id": 1, "code": "7", "active": True, "qty": 1, "amount": Decimal("1.50")},
                {"id": 2, "code": "8", "active": False, "qty": 0, "amount": Decimal("2.00")},
            ],
        )
    yield SqlReader(engine, "qv", [items])
    engine.dispose()


def _typed(field: str, text: str) -> object:
    return _parse_where([f"{field}:={text}"])[field]


def _ids(reader: SqlReader, **equals: object) -> tuple[list[int], list[int]]:
    found = [r["id"] for r in reader.find(items, **equals)]
    paged = [r["id"] for r in reader.page(items, equals, after=None, limit=5).rows]
    return found, paged


def test_python_values_are_sent_as_they_are_and_cli_json_values_checked(
    reader: SqlReader,
) -> None:
    if reader.engine.dialect.name == "sqlite":  # SQLite compares across kinds
        assert _ids(reader, code=7) == ([1], [1])
        assert _ids(reader, active=1) == ([1], [1])
        assert _ids(reader, qty=True) == ([1], [1])
    else:  # PostgreSQL refuses the comparison itself, as it always did
        for equals in ({"code": 7}, {"active": 1}, {"qty": True}):
            with pytest.raises(StoreError, match="operator does not exist"):
                reader.find(items, **equals)
    assert _ids(reader, qty=1.0) == ([1], [1])
    assert _ids(reader, qty=1.5) == ([], [])
    assert _ids(reader, qty="1", active="true", code="7") == ([1], [1])  # text: coerced

    assert _ids(reader, qty=_typed("qty", "1"), active=_typed("active", "true")) == ([1], [1])
    assert _ids(reader, code=_typed("code", '"7"'), amount=_typed("amount", "1.5")) == (
        [1],
        [1],
    )
    for field, text, kind in [
        ("code", "7", "str"),
        ("active", "1", "bool"),
        ("qty", "true", "int"),
        ("qty", "1.5", "int"),
    ]:
        with pytest.raises(QueryError, match=f"column '{field}': {text} is not a valid {kind}"):
            reader.find(items, **{field: _typed(field, text)})
    with pytest.raises(QueryError, match="must not be negative"):
        reader.find(items, limit=-1)
    assert reader.find(items, limit=0) == []


def test_a_typed_key_is_held_to_its_columns_kind(reader: SqlReader) -> None:
    """A table reads a text key as its columns' types; a ``:=JSON`` key (``readmodel query
    T :=1``) must suit them, a composite one given as a JSON list."""
    from workers.cli_query import _parse_key

    assert reader.get(items, _parse_key(":=1"))["code"] == "7"
    assert reader.get(items, _parse_key("1"))["code"] == "7"  # text, read as an integer
    assert reader.get(items, _parse_key(':="2"'))["code"] == "8"
    assert reader.get(items, _parse_key(":=3")) is None
    as_key = r"\(give the key as text: VALUE, or typed: :=JSON\)$"  # not --where's id=VALUE
    with pytest.raises(QueryError, match="column 'id': true is not a valid int " + as_key):
        reader.get(items, _parse_key(":=true"))
    with pytest.raises(QueryError, match=r"column 'id': \[1, 2\] is not a valid int " + as_key):
        reader.get(items, _parse_key(":=[1, 2]"))

    pair = sa.Table(
        "qv_pairs",
        sa.MetaData(),
        sa.Column("a", sa.Integer, primary_key=True),
        sa.Column("b", sa.String(10), primary_key=True),
    )
    assert reader.key(pair, _parse_key(':=[1, "x"]')) == (1, "x")
    assert reader.key(pair, _parse_key("1,x")) == (1, "x")
    with pytest.raises(
        QueryError,
        match=r"column 'b': 2 is not a valid str "
        r"\(give the key as text: VALUE,VALUE, or typed: :='\[JSON, JSON\]'\)$",
    ):
        reader.key(pair, _parse_key(":=[1, 2]"))
    with pytest.raises(QueryError, match=r"key 1 does not match its primary key \(a, b\)"):
        reader.key(pair, _parse_key(":=1"))


def test_cli_json_numbers_are_exact_for_numeric_columns() -> None:
    column = items.c.amount
    given = "123456789012345678.91"
    exact = Decimal(given)
    assert filter_value(column, _typed("amount", given)) == exact
    assert filter_value(column, _parse_where([f"amount={given}"])["amount"]) == exact
    assert filter_value(items.c.qty, _typed("qty", "9223372036854775807")) == 2**63 - 1
    assert filter_value(items.c.qty, _typed("qty", "3.0")) == 3


def test_a_numeric_filter_from_the_cli_finds_the_exact_row(pg_database: Callable[[], str]) -> None:
    engine = sa.create_engine(pg_database())
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                items.insert(),
                [
                    {"id": 1, "amount": Decimal("123456789012345678.91")},
                    {"id": 2, "amount": Decimal("123456789012345678.90")},
                ],
            )
        reader = SqlReader(engine, "qv", [items])
        typed = _typed("amount", "123456789012345678.91")
        assert [r["id"] for r in reader.find(items, amount=typed)] == [1]
    finally:
        engine.dispose()


def test_cli_refuses_unsuitable_json_values_naming_the_field(
    shop_factory: Callable[..., Shop],
    store_url: str,
    tmp_path: Path,
) -> None:
    shop = shop_factory(store_url)
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": [SHOP_PROJECTIONS],
            "store": {"url": shop.settings.store.url},
            "sources": {"shop": {"url": shop.settings.sources["shop"].url}},
        },
    )
    shop.write(orders_placed(5, 2))
    shop.sync()
    c = ["--allow-unindexed", "--json", "--config", str(config)]
    done = run_cli(["query", "shop_orders", "-w", "amount:=3", *c])
    assert done.exit_code == 0 and '"order_id":"o0003"' in done.stdout, done.output
    for where, message in {
        "customer:=7": "column 'customer': 7 is not a valid str (give text as customer=VALUE)",
        'customer:={"$oid": "65f0c0ffee0123456789abcd"}': "column 'customer': "
        '{"$oid": "65f0c0ffee0123456789abcd"} is not a valid str (give text as customer=VALUE)',
        "amount:=1.5": "column 'amount': 1.5 is not a valid int",
        "amount:=true": "column 'amount': true is not a valid int",
        "amount:=9223372036854775808": "--where amount:=9223372036854775808: "
        "9223372036854775808 is out of range (integers are signed 64-bit",
        "amount:=NaN": "--where amount:=NaN: not JSON (NaN is not a JSON number)",
        "amount:=1e99999": "--where amount:=1e99999: 1E+99999 is out of range",
        "amount:=": "--where amount:=: no JSON after :=; give text as amount=VALUE, or typed: "
        "amount:=JSON",
    }.items():
        done = run_cli(["query", "shop_orders", "-w", where, *c])
        assert done.exit_code == 2, (where, done.output)
        assert message in " ".join(done.stderr.split()), (where, done.stderr)
    for key, message in {
        ":=true": "error: column 'order_id': true is not a valid str (give the key as text: "
        "VALUE, or typed: :=JSON)",
        ":=": "error: KEY :=: no JSON after :=; give the key as text: VALUE, or typed: :=JSON",
        ":=o1": "error: KEY :=o1: not JSON (Expecting value: line 1 column 1 (char 0)); give "
        "the key as text: o1, or quoted: :='\"o1\"'",
    }.items():
        done = run_cli(["query", "shop_orders", key, *c[1:]])
        assert (done.exit_code, done.stdout) == (2, ""), (key, done.output)
        assert " ".join(done.stderr.split()) == message, (key, done.stderr)
