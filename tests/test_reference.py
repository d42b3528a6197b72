"""The reference e-commerce system: reproducible workload, projections across sources,
``verify`` on every engine it ships for."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from outbox.db import create_engine
from outbox.relay import Relay
from projections.reference.order_summary import order_summary
from projections.reference.simulate import Simulator
from tests.cli_helpers import run_cli, write_config
from tests.reference_helpers import SERVICES, count, reference_settings, service_rows
from workers.runtime import build_runtime
from workers.worker import run_until_caught_up

USERS, ORDERS = 60, 200


def _sqlite_services(make: Callable[[], str]) -> dict[str, str]:
    return {name: make() for name in SERVICES}


def test_same_seed_same_service_state_different_seed_different(
    sqlite_database: Callable[[], str],
) -> None:
    runs = {}
    for label, seed in (("a", 7), ("b", 7), ("c", 8)):
        services = _sqlite_services(sqlite_database)
        settings = reference_settings(sqlite_database(), services)
        result = Simulator(settings, seed=seed).run(USERS, ORDERS)
        assert result.actions["register"] == USERS and result.actions["place_order"] == ORDERS
        runs[label] = service_rows(services)

    a, b, c = runs["a"], runs["b"], runs["c"]
    assert set(a) == {
        "auth.users",
        "products.products",
        "products.product_variants",
        "products.inventory_movements",
        "products.product_reviews",
        "orders.orders",
        "orders.order_line_items",
    }
    for table in a:
        assert a[table] == b[table], f"{table} differs between two runs with the same seed"
    assert len(a["auth.users"]) == USERS and len(a["orders.orders"]) == ORDERS
    assert {row[0] for row in a["orders.orders"]}.isdisjoint({row[0] for row in c["orders.orders"]})
    assert a["orders.order_line_items"] != c["orders.order_line_items"]


def test_workload_is_skewed_and_consistent(sqlite_database: Callable[[], str]) -> None:
    services = _sqlite_services(sqlite_database)
    Simulator(reference_settings(sqlite_database(), services), seed=3).run(100, 600)
    engine = create_engine(services["orders"])
    try:
        with engine.connect() as conn:
            per_product = [
                n
                for (n,) in conn.exec_driver_sql(
                    "SELECT count(*) FROM order_line_items GROUP BY product_id ORDER BY 1 DESC"
                )
            ]
            statuses = {
                s: n
                for s, n in conn.exec_driver_sql("SELECT status, count(*) FROM orders GROUP BY 1")
            }
    finally:
        engine.dispose()
    # Zipf: the hottest product sells far more than the median one.
    assert per_product[0] >= 5 * per_product[len(per_product) // 2]
    assert set(statuses) == {"placed", "paid", "shipped", "cancelled"}
    assert sum(statuses.values()) == 600
    # every service change wrote its events: the outboxes hold them until a relay runs
    assert count(services["auth"], "SELECT count(*) FROM outbox") >= 100


def test_orders_before_their_customers_get_the_email_when_it_arrives(
    sqlite_database: Callable[[], str],
) -> None:
    services = _sqlite_services(sqlite_database)
    settings = reference_settings(sqlite_database(), services)
    Simulator(settings, seed=11).run(USERS, ORDERS)
    runtime = build_runtime(settings)
    try:
        orders_relay = Relay(settings, sources=["orders"], log=runtime.log)
        assert orders_relay.drain()["orders"].relayed > ORDERS
        runtime.engine.catch_up()
        with runtime.log.engine.connect() as conn:
            emails = [e for (e,) in conn.execute(sa.select(order_summary.c.customer_email))]
        assert len(emails) == ORDERS and set(emails) == {None}  # auth not relayed yet

        run_until_caught_up(runtime)
        with runtime.log.engine.connect() as conn:
            emails = [e for (e,) in conn.execute(sa.select(order_summary.c.customer_email))]
        assert len(emails) == ORDERS and None not in emails
    finally:
        runtime.close()
    config = _config_file(settings, Path(sqlite_database().removeprefix("sqlite:///") + ".toml"))
    assert run_cli(["verify", "--config", str(config)]).exit_code == 0


def _config_file(settings, path: Path) -> Path:  # type: ignore[no-untyped-def]
    return write_config(
        path,
        {
            "projections": settings.projections,
            "store": {"url": settings.store.url},
            "sources": {name: {"url": s.url} for name, s in settings.sources.items()},
        },
    )


@pytest.mark.parametrize("store_engine", ["sqlite", "postgresql"])
def test_verify_passes_then_names_every_planted_mismatch(
    store_engine: str,
    database_for: Callable[[str], str],
    tmp_path: Path,
) -> None:
    services = {"auth": database_for("mysql"), "products": database_for("postgresql")}
    services["orders"] = (
        database_for("postgresql") if store_engine == "postgresql" else (database_for("sqlite"))
    )
    store = database_for(store_engine)
    settings = reference_settings(store, services)
    Simulator(settings, seed=5).run(USERS, ORDERS)
    runtime = build_runtime(settings)
    try:
        run_until_caught_up(runtime)
    finally:
        runtime.close()
    config = _config_file(settings, tmp_path / "reference.toml")

    clean = run_cli(["verify", "--config", str(config), "--json"])
    assert clean.exit_code == 0, clean.output
    report = json.loads(clean.stdout)
    assert report["ok"] is True
    assert {name: p["checked"] > 0 for name, p in report["projections"].items()} == {
        "user_directory": True,
        "product_catalog": True,
        "order_summary": True,
        "customer_stats": True,
    }

    engine = create_engine(store)
    try:
        with engine.begin() as conn:
            product = conn.exec_driver_sql(
                "SELECT product_id FROM product_catalog ORDER BY product_id LIMIT 1"
            ).scalar_one()
            conn.exec_driver_sql(
                f"UPDATE product_catalog SET stock = stock + 1 WHERE product_id = '{product}'"
            )
            user = conn.exec_driver_sql(
                "SELECT user_id FROM user_directory ORDER BY user_id LIMIT 1"
            ).scalar_one()
            conn.exec_driver_sql(f"DELETE FROM user_directory WHERE user_id = '{user}'")
            conn.exec_driver_sql(
                "INSERT INTO customer_stats VALUES ('no-such-customer', 1, 0, 100)"
            )
    finally:
        engine.dispose()

    planted = run_cli(["verify", "--config", str(config)])
    assert planted.exit_code == 1
    assert product[:20] in planted.stdout and user[:20] in planted.stdout

    as_json = run_cli(["verify", "--config", str(config), "--json"])
    assert as_json.exit_code == 1
    found = {
        (m["projection"], m["key"], m["kind"]): m["columns"]
        for p in json.loads(as_json.stdout)["projections"].values()
        for m in p["examples"]
    }
    assert set(found) == {
        ("product_catalog", product, "differs"),
        ("user_directory", user, "missing"),
        ("customer_stats", "no-such-customer", "unexpected"),
    }
    stock = found[("product_catalog", product, "differs")]["stock"]
    assert stock["actual"] == stock["expected"] + 1


def test_reference_init_prints_and_applies_each_service_schema(
    database_for: Callable[[str], str], tmp_path: Path
) -> None:
    services = {
        "auth": database_for("mysql"),
        "products": database_for("postgresql"),
        "orders": database_for("postgresql"),
    }
    config = _config_file(reference_settings(database_for("sqlite"), services), tmp_path / "r.toml")

    printed = run_cli(["reference", "init", "--config", str(config), "--print"])
    assert printed.exit_code == 0, printed.output
    for service in SERVICES:
        assert f"-- service {service}" in printed.stdout
    assert "CREATE TABLE IF NOT EXISTS users" in printed.stdout
    assert "CREATE TABLE IF NOT EXISTS `outbox`" in printed.stdout  # MariaDB
    assert 'CREATE TABLE IF NOT EXISTS "outbox"' in printed.stdout  # PostgreSQL
    assert "UUID" in printed.stdout  # PostgreSQL keys are native UUIDs

    for _ in range(2):  # idempotent
        applied = run_cli(["reference", "init", "--config", str(config)])
        assert applied.exit_code == 0, applied.output
    assert count(services["auth"], "SELECT count(*) FROM users") == 0
    assert count(services["orders"], "SELECT count(*) FROM outbox") == 0

    args = ["simulate", "--config", str(config), "--users", "2", "--orders", "2", "--seed", "5"]
    assert run_cli(args).exit_code == 0
    again = run_cli(args)  # the same users and orders again: refused, not "unreachable"
    assert again.exit_code == 1, again.output
    assert "IntegrityError" in again.stderr

    missing = write_config(tmp_path / "bad.toml", {"sources": {"auth": {"url": services["auth"]}}})
    result = run_cli(["simulate", "--config", str(missing), "--users", "1", "--orders", "1"])
    assert result.exit_code == 2
    assert "missing: products, orders" in result.stderr


def test_the_reference_read_models_cached_in_redis_follow_the_events(
    sqlite_database: Callable[[], str],
) -> None:
    """Reads of order_summary and customer_stats through the Redis cache, then an order is
    cancelled: the next reads return the cancellation (their cache tags were invalidated)."""
    from projections.query_service import open_queries
    from projections.reference.events import ORDERS
    from tests.cache_helpers import REDIS_URL, append, fresh_prefix

    services = _sqlite_services(sqlite_database)
    prefix = fresh_prefix()
    settings = reference_settings(
        sqlite_database(), services, cache={"url": REDIS_URL, "key_prefix": prefix}
    )
    Simulator(settings, seed=5).run(20, 30)
    runtime = build_runtime(settings)
    queries = open_queries(settings)
    try:
        run_until_caught_up(runtime)
        with runtime.log.engine.connect() as conn:
            order_id, customer = conn.execute(
                sa.select(order_summary.c.order_id, order_summary.c.customer_id)
                .where(order_summary.c.status != "cancelled")
                .order_by(order_summary.c.order_id)
                .limit(1)
            ).one()

        def read() -> tuple[Any, Any]:
            order = queries.run("order_summary", "by_id", order_id).value
            stats = queries.run("customer_stats", "by_customer", customer).value
            return order, stats

        before = read()
        assert read() == before  # served from the cache now
        cancel = {"order_id": order_id, "user_id": customer, "reason": "test"}
        append(runtime.log, ORDERS, [("order", order_id, "OrderCancelled", cancel)])
        runtime.engine.catch_up()
        order, stats = read()
        assert order["status"] == "cancelled"
        assert stats["cancelled_count"] == before[1]["cancelled_count"] + 1
    finally:
        queries.close()
        runtime.close()
        with redis.Redis.from_url(REDIS_URL) as client:
            for key in client.scan_iter(f"{prefix}*"):
                client.delete(key)
