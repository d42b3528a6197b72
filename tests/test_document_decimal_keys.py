"""A document ``get`` by a decimal ``_id`` is cached like any other key, apart from the text
``_id`` of its digits, and an event of the aggregate (however it spells the number)
invalidates it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis

from outbox.log import EventLog
from projections.document_generations import collections_at, generation_of
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.query_reader import JsonValue
from projections.query_service import Queries
from projections.redis_cache import RedisCache
from tests.cache_helpers import REDIS_URL, append
from tests.decimal_id_fixtures import DocPrices


@pytest.fixture
def prices(
    pg_database: Callable[[], str], mongo_database: Callable[[], str], redis_key_prefix: str
) -> Iterator[tuple[EventLog, MongoStore, ProjectionEngine, Queries]]:
    log = EventLog(pg_database())
    log.create_tables()
    store = MongoStore(mongo_database())
    store.create_tables([DocPrices()])
    cache = RedisCache(REDIS_URL, key_prefix=redis_key_prefix, near_cache_size=0, timeout=5.0)
    engine = ProjectionEngine(LogReader(log), [DocPrices()], {"docs": store}, cache=cache)
    queries = Queries.from_engine(engine, log.engine)
    yield log, store, engine, queries
    queries.close()
    engine.close()
    cache.close()
    log.close()


def _entries(prefix: str) -> set[str]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        start = f"{prefix}e:doc_prices:"
        return {k.decode()[len(start) :] for k in client.scan_iter(match=start + "*")}
    finally:
        client.close()


def test_a_decimal_id_is_cached_and_invalidated_by_its_aggregates_events(
    prices: tuple[EventLog, MongoStore, ProjectionEngine, Queries], redis_key_prefix: str
) -> None:
    log, store, engine, queries = prices
    digits = "123456789012345678.91"  # no float holds it: read as a Decimal

    def apply(aggregate_id: str, value: str) -> None:
        append(log, "prices", [("price", aggregate_id, "PriceSet", {"value": value})])
        assert engine.catch_up(["doc_prices"]) == 1

    def read(key: Any) -> Any:
        document = queries.get("doc_prices", key).value
        return None if document is None else document["value"]

    apply("1.50", "v1")
    apply(digits, "v1")
    store.database[_physical(store)].insert_many(
        [{"_id": "1.5", "value": "text"}, {"_id": digits, "value": "text"}]
    )
    for _ in range(2):  # the second time from the cache: each key its own entry
        assert read(Decimal("1.5")) == "v1"
        assert read(Decimal("1.50")) == "v1"
        assert read(JsonValue(Decimal(digits), digits)) == "v1"
        assert read("1.5") == "text"
        assert read(digits) == "text"
    assert {e for e in _entries(redis_key_prefix) if e.startswith("get:")} == {
        'get:doc_prices:[{"$numberDecimal":"1.5"}]',
        f'get:doc_prices:[{{"$numberDecimal":"{digits}"}}]',
        'get:doc_prices:["1.5"]',
        f'get:doc_prices:["{digits}"]',
    }
    apply("1.5", "v2")  # the same number, spelled otherwise: the same document
    apply(digits + "0", "v2")
    assert read(Decimal("1.50")) == "v2"
    assert read(Decimal("1.5")) == "v2"
    assert read(JsonValue(Decimal(digits), digits)) == "v2"
    assert read("1.5") == "text"


def _physical(store: MongoStore) -> str:
    return collections_at(DocPrices(), generation_of(store.database, "doc_prices"))["doc_prices"]


def test_document_tags_spelled_by_hand_meet_the_events(
    prices: tuple[EventLog, MongoStore, ProjectionEngine, Queries],
) -> None:
    """``@query`` tags (``price:2.50``) against an event's (``price:2.5``), and a key's tag
    (``price:3``) against ``tx.invalidate("price:3.0")``."""
    log, _, engine, queries = prices

    def apply(event: tuple[str, str, str, dict[str, Any]]) -> None:
        append(log, "prices", [event])
        assert engine.catch_up(["doc_prices"]) == 1

    def price_of() -> Any:
        return queries.run("doc_prices", "price_of", Decimal("2.50")).value

    def get_three() -> Any:
        document = queries.get("doc_prices", 3).value
        return None if document is None else document["value"]

    apply(("price", "2.5", "PriceSet", {"value": "v1"}))
    apply(("batch", "1", "Repriced", {"id": "3.0", "value": "v1"}))
    assert [price_of(), price_of()] == ["v1", "v1"]  # the second from the cache
    assert [get_three(), get_three()] == ["v1", "v1"]
    apply(("price", "2.5", "PriceSet", {"value": "v2"}))
    apply(("batch", "2", "Repriced", {"id": "3.0", "value": "v2"}))
    assert (price_of(), get_three()) == ("v2", "v2")
