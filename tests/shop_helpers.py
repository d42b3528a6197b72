"""The shop of the query tests: a SQLite ``shop`` outbox feeding the ``shop_orders``
projection (tests/query_fixtures.py) in the store under test, relayed and applied on
demand, with the orders it is written."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from config import Settings
from outbox.relay import Relay
from projections import Queries, open_queries
from tests.outbox_helpers import init_outbox
from workers.broker import make_broker
from workers.runtime import Runtime, build_runtime
from workers.worker import run_pipeline

SHOP_PROJECTIONS = "tests.query_fixtures"
EventRow = tuple[str, str, str, dict[str, Any]]


class Shop:
    """A SQLite ``shop`` outbox feeding the ``shop_orders`` projection in the store under test."""

    def __init__(
        self, make_settings: Callable[..., Settings], store_url: str, source_url: str, **other: Any
    ) -> None:
        self.settings = make_settings(
            store_url,
            {"shop": {"url": source_url, "poll_max": "50ms"}},
            projections=[SHOP_PROJECTIONS],
            **other,
        )
        init_outbox(self.settings.sources["shop"], "shop")
        self.source = sa.create_engine(source_url)
        self.runtime: Runtime = build_runtime(self.settings)
        self.queries: Queries = open_queries(self.settings)

    def write(self, events: list[EventRow]) -> list[str]:
        """Commit outbox rows; returns their event ids."""
        ids = [uuid.uuid4().hex for _ in events]
        rows = [
            {
                "id": event_id,
                "aggregatetype": kind,
                "aggregateid": key,
                "type": event_type,
                "payload": orjson.dumps(payload).decode(),
            }
            for event_id, (kind, key, event_type, payload) in zip(ids, events, strict=True)
        ]
        table = sa.table("outbox", *[sa.column(c) for c in rows[0]])
        with self.source.begin() as conn:
            conn.execute(sa.insert(table), rows)
        return ids

    def relay(self) -> None:
        Relay(self.settings, log=self.runtime.log).drain()

    def sync(self) -> None:
        self.relay()
        self.runtime.engine.catch_up()

    def close(self) -> None:
        self.queries.close()
        self.runtime.close()
        self.source.dispose()


@contextmanager
def pipeline_running(shop: Shop) -> Iterator[Shop]:
    """``shop`` with its relay and worker (two threads) running in this process, on the
    broker its settings give, until the block ends; they must stop within a minute."""
    stop = threading.Event()
    broker = make_broker(shop.settings.broker)
    thread = threading.Thread(
        target=run_pipeline, args=(shop.runtime, broker, stop), kwargs={"threads": 2}, daemon=True
    )
    thread.start()
    try:
        yield shop
    finally:
        stop.set()
        thread.join(timeout=60)
        broker.close()
    assert not thread.is_alive()


@pytest.fixture
def shop_factory(
    make_settings: Callable[..., Settings], sqlite_database: Callable[[], str]
) -> Iterator[Callable[..., Shop]]:
    """``shop_factory(store_url, **settings)`` -> a :class:`Shop`; all are closed after."""
    made: list[Shop] = []

    def make(store_url: str, **other: Any) -> Shop:
        shop = Shop(make_settings, store_url, sqlite_database(), **other)
        made.append(shop)
        return shop

    yield make
    for shop in made:
        shop.close()


def order_placed(order_id: str, customer: str, amount: int, note: str | None = None) -> EventRow:
    return (
        "order",
        order_id,
        "OrderPlaced",
        {"customer": customer, "amount": amount, "note": note},
    )


def orders_placed(n: int, customers: int) -> list[EventRow]:
    """Orders ``o0000``.. of ``n`` amounts 0.., spread over customers ``c0``.."""
    return [order_placed(f"o{i:04d}", f"c{i % customers}", i) for i in range(n)]
