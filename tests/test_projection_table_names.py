"""A projection's tables are told apart by name alone (its pending writes, row locks, read
model queries and replay shadows): two tables of one name in different schemas are refused
when the projection class is defined, naming both, instead of a KeyError at live apply."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from projections.api import Event, Projection, Tx, on

metadata = sa.MetaData()
a_orders = sa.Table("orders", metadata, sa.Column("id", sa.Text, primary_key=True), schema="a")
b_orders = sa.Table("orders", metadata, sa.Column("id", sa.Text, primary_key=True), schema="b")
plain_orders = sa.Table("orders", metadata, sa.Column("id", sa.Text, primary_key=True))
b_items = sa.Table("items", metadata, sa.Column("id", sa.Text, primary_key=True), schema="b")


def test_two_tables_of_one_name_in_different_schemas_are_refused() -> None:
    with pytest.raises(TypeError) as refused:

        class Orders(Projection):
            name = "two_orders"
            tables = (a_orders, b_items, b_orders)

            @on("shop", "Placed")
            def placed(self, event: Event[dict[str, str]], tx: Tx) -> None:
                tx.upsert(a_orders, {"id": event.aggregate_id})

    message = str(refused.value)
    assert message.startswith("Orders: tables a.orders and b.orders share the name 'orders'")
    assert "by name alone" in message and "rename one" in message


def test_a_schema_less_table_and_one_in_a_schema_of_one_name_are_refused() -> None:
    with pytest.raises(TypeError, match="tables orders and b.orders share the name 'orders'"):
        type("Mixed", (Projection,), {"name": "mixed", "tables": (plain_orders, b_orders)})


def test_the_same_table_listed_twice_or_distinct_names_pass() -> None:
    listed_twice = type("Twice", (Projection,), {"name": "twice", "tables": (b_items, b_items)})
    distinct = type("Distinct", (Projection,), {"name": "distinct", "tables": (a_orders, b_items)})
    assert listed_twice.tables == (b_items, b_items) and len(distinct.tables) == 2
