"""The service databases of the reference e-commerce system: one schema per service.

These SQLAlchemy tables are the single source of truth for the services' DDL on every
engine (``readmodel reference init --print`` shows it per dialect): auth on MySQL/MariaDB,
products + inventory and orders on PostgreSQL, all three on SQLite for the embedded demo.
They follow the project's source documents (UUID keys, snake_case, no foreign key across
databases), trimmed to what the reference projections need; money is in integer cents.
Each service database also holds its outbox table (``readmodel outbox init``).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from projections.reference.events import AUTH, ORDERS, PRODUCTS

Uuid = sa.String(36).with_variant(postgresql.UUID(as_uuid=False), "postgresql")
Timestamp = sa.DateTime(timezone=True)

auth_metadata = sa.MetaData()
products_metadata = sa.MetaData()
orders_metadata = sa.MetaData()

users = sa.Table(
    "users",
    auth_metadata,
    sa.Column("id", Uuid, primary_key=True),
    sa.Column("email", sa.String(255), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("first_name", sa.String(100), nullable=False),
    sa.Column("last_name", sa.String(100), nullable=False),
    sa.Column("is_active", sa.Boolean, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

products = sa.Table(
    "products",
    products_metadata,
    sa.Column("id", Uuid, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("slug", sa.String(255), nullable=False, unique=True),
    sa.Column("sku", sa.String(100), nullable=False, unique=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("price_cents", sa.Integer, nullable=False),
    sa.Column("is_active", sa.Boolean, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

product_variants = sa.Table(
    "product_variants",
    products_metadata,
    sa.Column("id", Uuid, primary_key=True),
    sa.Column("product_id", Uuid, sa.ForeignKey("products.id"), nullable=False, index=True),
    sa.Column("title", sa.String(255), nullable=False),
    sa.Column("sku", sa.String(100), nullable=False, unique=True),
    sa.Column("inventory_quantity", sa.Integer, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)

inventory_movements = sa.Table(
    "inventory_movements",
    products_metadata,
    sa.Column("id", Uuid, primary_key=True),
    sa.Column("product_variant_id", Uuid, sa.ForeignKey("product_variants.id"), nullable=False),
    sa.Column("product_id", Uuid, nullable=False, index=True),
    sa.Column("movement_type", sa.String(50), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("reference_id", Uuid),
    sa.Column("reference_type", sa.String(50)),
    sa.Column("created_at", Timestamp, nullable=False),
)

product_reviews = sa.Table(
    "product_reviews",
    products_metadata,
    sa.Column("id", Uuid, primary_key=True),
    sa.Column("product_id", Uuid, sa.ForeignKey("products.id"), nullable=False, index=True),
    sa.Column("user_id", Uuid, nullable=False),  # a user of the auth service
    sa.Column("rating", sa.SmallInteger, nullable=False),
    sa.Column("title", sa.String(255), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.CheckConstraint("rating BETWEEN 1 AND 5", name="product_reviews_rating_check"),
)

orders = sa.Table(
    "orders",
    orders_metadata,
    sa.Column("id", Uuid, primary_key=True),
    sa.Column("order_number", sa.String(100), nullable=False, unique=True),
    sa.Column("user_id", Uuid, nullable=False, index=True),  # a user of the auth service
    sa.Column("status", sa.String(50), nullable=False),  # placed, paid, shipped, cancelled
    sa.Column("financial_status", sa.String(50), nullable=False),  # pending, paid, refunded
    sa.Column("fulfillment_status", sa.String(50), nullable=False),  # unfulfilled, fulfilled
    sa.Column("subtotal_cents", sa.BigInteger, nullable=False),
    sa.Column("total_cents", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("tracking_number", sa.String(255)),
    sa.Column("cancel_reason", sa.String(255)),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("paid_at", Timestamp),
    sa.Column("shipped_at", Timestamp),
    sa.Column("cancelled_at", Timestamp),
    sa.Column("updated_at", Timestamp, nullable=False),
)

order_line_items = sa.Table(
    "order_line_items",
    orders_metadata,
    sa.Column("id", Uuid, primary_key=True),
    sa.Column("order_id", Uuid, sa.ForeignKey("orders.id"), nullable=False, index=True),
    sa.Column("product_id", Uuid, nullable=False),  # a product of the products service
    sa.Column("variant_id", Uuid),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("price_cents", sa.Integer, nullable=False),
    sa.Column("title", sa.String(255), nullable=False),  # snapshot at order time
    sa.Column("position", sa.SmallInteger, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)

SERVICES: dict[str, sa.MetaData] = {
    AUTH: auth_metadata,
    PRODUCTS: products_metadata,
    ORDERS: orders_metadata,
}


def service_tables(service: str) -> list[sa.Table]:
    """The service's tables in dependency order."""
    try:
        return list(SERVICES[service].sorted_tables)
    except KeyError:
        known = ", ".join(sorted(SERVICES))
        raise ValueError(f"unknown reference service {service!r} (known: {known})") from None


def service_ddl(service: str, dialect: sa.Dialect) -> list[str]:
    """``CREATE TABLE`` and ``CREATE INDEX`` statements of one service for one dialect."""
    statements: list[str] = []
    for table in service_tables(service):
        statements.append(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            statements.append(str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect)))
    return [s.strip() for s in statements]
