"""``verify``: recompute every reference read model from the service databases (the ground
truth) and compare it with the read models, key by key.

Each projection is checked in two passes of bounded chunks (keyset pagination, so memory
stays flat however large the shop): every key of the services is recomputed and compared
with its read-model row (``missing`` or ``differs``), then every read-model key is looked
up in the services (``unexpected``). A projection that trails the services shows its lag
as mismatches, so run it when the pipeline has caught up, or read the result as "what is
not applied yet".
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from outbox.db import describe_db_error
from outbox.errors import ReadmodelError
from projections.reference.customer_stats import customer_stats
from projections.reference.events import AUTH, ORDERS, PRODUCTS
from projections.reference.order_summary import order_summary
from projections.reference.product_catalog import average_rating, product_catalog
from projections.reference.services import (
    order_line_items,
    orders,
    product_reviews,
    product_variants,
    products,
    users,
)
from projections.reference.user_directory import user_directory

Row = dict[str, Any]
CHUNK = 1000


@dataclass(frozen=True, slots=True)
class Mismatch:
    projection: str
    key: str
    kind: str  # missing, unexpected, differs
    columns: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # name: (expected, actual)

    def as_dict(self) -> dict[str, Any]:
        return {
            "projection": self.projection,
            "key": self.key,
            "kind": self.kind,
            "columns": {k: {"expected": e, "actual": a} for k, (e, a) in self.columns.items()},
        }


@dataclass
class ProjectionReport:
    projection: str
    checked: int = 0
    mismatch_count: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)  # the first ``keep`` of them


@dataclass
class VerifyReport:
    projections: dict[str, ProjectionReport] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was skipped, and why

    @property
    def ok(self) -> bool:
        return all(r.mismatch_count == 0 for r in self.projections.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "notes": self.notes,
            "projections": {
                name: {
                    "checked": r.checked,
                    "mismatches": r.mismatch_count,
                    "examples": [m.as_dict() for m in r.mismatches],
                }
                for name, r in self.projections.items()
            },
        }


class VerifyError(ReadmodelError):
    """A database could not be read while verifying."""


class Check(Protocol):
    """How one read model is recomputed: its keys in the services and in the read model
    (sorted, after a key, at most ``limit``), and the expected and actual rows of a chunk of
    keys (the expected row's columns are those compared)."""

    name: str

    def source_keys(self, after: str | None, limit: int) -> list[str]: ...

    def expected(self, keys: Sequence[str]) -> dict[str, Row]: ...

    def model_keys(self, after: str | None, limit: int) -> list[str]: ...

    def actual(self, keys: Sequence[str]) -> dict[str, Row]: ...


class _Check:
    """A :class:`Check` of a projection in a SQL read store."""

    name: str
    table: sa.Table
    key: str

    def __init__(self, services: dict[str, sa.Engine], store: sa.Engine) -> None:
        self.services = services
        self.store = store

    def source_keys(self, after: str | None, limit: int) -> list[str]:
        raise NotImplementedError

    def expected(self, keys: Sequence[str]) -> dict[str, Row]:
        raise NotImplementedError

    def model_keys(self, after: str | None, limit: int) -> list[str]:
        column = self.table.c[self.key]
        query = sa.select(column).order_by(column).limit(limit)
        if after is not None:
            query = query.where(column > after)
        return [str(k) for k in _scalars(self.store, query)]

    def actual(self, keys: Sequence[str]) -> dict[str, Row]:
        column = self.table.c[self.key]
        rows = _rows(self.store, sa.select(self.table).where(column.in_(list(keys))))
        return {str(row[self.key]): row for row in rows}


def _keys(
    engine: sa.Engine, column: sa.ColumnElement[Any], after: str | None, limit: int
) -> list[str]:
    query = sa.select(column).distinct().order_by(column).limit(limit)
    if after is not None:
        query = query.where(column > after)
    return [str(k) for k in _scalars(engine, query)]


class _UserDirectory(_Check):
    name, table, key = "user_directory", user_directory, "user_id"

    def source_keys(self, after: str | None, limit: int) -> list[str]:
        return _keys(self.services[AUTH], users.c.id, after, limit)

    def expected(self, keys: Sequence[str]) -> dict[str, Row]:
        query = sa.select(users).where(users.c.id.in_(list(keys)))
        return {
            str(u["id"]): {
                "email": u["email"],
                "name": f"{u['first_name']} {u['last_name']}",
                "active": bool(u["is_active"]),
            }
            for u in _rows(self.services[AUTH], query)
        }


class _ProductCatalog(_Check):
    name, table, key = "product_catalog", product_catalog, "product_id"

    def source_keys(self, after: str | None, limit: int) -> list[str]:
        return _keys(self.services[PRODUCTS], products.c.id, after, limit)

    def expected(self, keys: Sequence[str]) -> dict[str, Row]:
        engine, wanted = self.services[PRODUCTS], list(keys)
        stock = {
            str(r["product_id"]): int(r["stock"])
            for r in _rows(
                engine,
                sa.select(
                    product_variants.c.product_id,
                    sa.func.sum(product_variants.c.inventory_quantity).label("stock"),
                )
                .where(product_variants.c.product_id.in_(wanted))
                .group_by(product_variants.c.product_id),
            )
        }
        reviews = {
            str(r["product_id"]): (int(r["n"]), int(r["total"]))
            for r in _rows(
                engine,
                sa.select(
                    product_reviews.c.product_id,
                    sa.func.count().label("n"),
                    sa.func.sum(product_reviews.c.rating).label("total"),
                )
                .where(product_reviews.c.product_id.in_(wanted))
                .group_by(product_reviews.c.product_id),
            )
        }
        out: dict[str, Row] = {}
        for p in _rows(engine, sa.select(products).where(products.c.id.in_(wanted))):
            key = str(p["id"])
            count, total = reviews.get(key, (0, 0))
            out[key] = {
                "slug": p["slug"],
                "name": p["name"],
                "sku": p["sku"],
                "description": p["description"],
                "price_cents": p["price_cents"],
                "stock": stock.get(key, 0),
                "review_count": count,
                "rating_sum": total,
                "average_rating": average_rating(total, count),
            }
        return out


class _OrderSummary(_Check):
    name, table, key = "order_summary", order_summary, "order_id"

    def source_keys(self, after: str | None, limit: int) -> list[str]:
        return _keys(self.services[ORDERS], orders.c.id, after, limit)

    def expected(self, keys: Sequence[str]) -> dict[str, Row]:
        engine, wanted = self.services[ORDERS], list(keys)
        lines: dict[str, list[Row]] = {}
        query = (
            sa.select(order_line_items)
            .where(order_line_items.c.order_id.in_(wanted))
            .order_by(order_line_items.c.order_id, order_line_items.c.position)
        )
        for line in _rows(engine, query):
            lines.setdefault(str(line["order_id"]), []).append(line)
        found = _rows(engine, sa.select(orders).where(orders.c.id.in_(wanted)))
        customers = sorted({str(o["user_id"]) for o in found})
        emails = (
            {
                str(r["id"]): r["email"]
                for r in _rows(
                    self.services[AUTH],
                    sa.select(users.c.id, users.c.email).where(users.c.id.in_(customers)),
                )
            }
            if customers
            else {}
        )
        out: dict[str, Row] = {}
        for o in found:
            key = str(o["id"])
            items = lines.get(key, [])
            out[key] = {
                "order_number": o["order_number"],
                "customer_id": str(o["user_id"]),
                "customer_email": emails.get(str(o["user_id"])),
                "status": o["status"],
                "currency": o["currency"],
                "total_cents": int(o["total_cents"]),
                "item_count": sum(i["quantity"] for i in items),
                "lines": [
                    {
                        "product_id": str(i["product_id"]),
                        "title": i["title"],
                        "unit_price_cents": i["price_cents"],
                        "quantity": i["quantity"],
                    }
                    for i in items
                ],
                "tracking_number": o["tracking_number"],
            }
        return out


class _CustomerStats(_Check):
    name, table, key = "customer_stats", customer_stats, "customer_id"

    def source_keys(self, after: str | None, limit: int) -> list[str]:
        return _keys(self.services[ORDERS], orders.c.user_id, after, limit)

    def expected(self, keys: Sequence[str]) -> dict[str, Row]:
        cancelled = orders.c.status == "cancelled"
        query = (
            sa.select(
                orders.c.user_id,
                sa.func.sum(sa.case((cancelled, 0), else_=1)).label("orders_count"),
                sa.func.sum(sa.case((cancelled, 1), else_=0)).label("cancelled_count"),
                sa.func.sum(
                    sa.case((orders.c.financial_status == "paid", orders.c.total_cents), else_=0)
                ).label("spent"),
            )
            .where(orders.c.user_id.in_(list(keys)))
            .group_by(orders.c.user_id)
        )
        return {
            str(r["user_id"]): {
                "orders_count": int(r["orders_count"]),
                "cancelled_count": int(r["cancelled_count"]),
                "total_spent_cents": int(r["spent"]),
            }
            for r in _rows(self.services[ORDERS], query)
        }


CHECKS: dict[str, type[_Check]] = {
    c.name: c for c in (_UserDirectory, _ProductCatalog, _OrderSummary, _CustomerStats)
}


def verify(
    services: dict[str, sa.Engine],
    stores: dict[str, sa.Engine],
    *,
    chunk: int = CHUNK,
    keep: int = 100,
    progress: Callable[[str, int], None] | None = None,
    more: Sequence[Check] = (),
) -> VerifyReport:
    """Compare each projection in ``stores`` (name -> the engine of its read store) with what
    the ``services`` (``auth``, ``products``, ``orders`` engines) say it must hold, then run
    the checks in ``more`` (read models in other kinds of store).
    ``keep`` bounds how many mismatches per projection are kept as examples."""
    report = VerifyReport()
    checks = [CHECKS[name](services, store) for name, store in stores.items()]
    for check in [*checks, *more]:
        name = check.name
        result = report.projections[name] = ProjectionReport(name)

        def found(mismatch: Mismatch, result: ProjectionReport = result) -> None:
            result.mismatch_count += 1
            if len(result.mismatches) < keep:
                result.mismatches.append(mismatch)

        for keys in _chunks(check.source_keys, chunk):
            expected, actual = check.expected(keys), check.actual(keys)
            for key in keys:
                if key not in expected:  # deleted between the two reads
                    continue
                result.checked += 1
                row = actual.get(key)
                if row is None:
                    found(Mismatch(name, key, "missing"))
                    continue
                diff = {
                    column: (value, _plain(row.get(column)))
                    for column, value in expected[key].items()
                    if _plain(value) != _plain(row.get(column))
                }
                if diff:
                    found(Mismatch(name, key, "differs", diff))
            if progress:
                progress(name, result.checked)
        for keys in _chunks(check.model_keys, chunk):
            expected = check.expected([key for key in keys if _is_uuid(key)])
            for key in keys:
                if key not in expected:
                    found(Mismatch(name, key, "unexpected"))
    return report


def _is_uuid(key: str) -> bool:
    """Every service key is a UUID: any other read-model key is unexpected (and must not
    reach a PostgreSQL ``uuid`` comparison)."""
    try:
        uuid.UUID(key)
    except ValueError:
        return False
    return True


def _chunks(fetch: Callable[[str | None, int], list[str]], size: int) -> Iterator[list[str]]:
    after: str | None = None
    while True:
        keys = fetch(after, size)
        if not keys:
            return
        yield keys
        if len(keys) < size:
            return
        after = keys[-1]


def _plain(value: Any) -> Any:
    """Values as the services and the read store may each return them, made comparable."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Decimal):
        return int(value) if value == int(value) else float(value)
    return value if isinstance(value, int | str) else str(value)


def _rows(engine: sa.Engine, query: sa.Select[Any]) -> list[Row]:
    try:
        with engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]
    except SQLAlchemyError as exc:
        raise VerifyError(f"{engine.url.database}: {describe_db_error(exc)}") from exc


def _scalars(engine: sa.Engine, query: sa.Select[Any]) -> list[Any]:
    try:
        with engine.connect() as conn:
            return list(conn.execute(query).scalars())
    except SQLAlchemyError as exc:
        raise VerifyError(f"{engine.url.database}: {describe_db_error(exc)}") from exc
