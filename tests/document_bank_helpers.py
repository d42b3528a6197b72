"""The document bank of the document query, key and replay tests: ``DocAccounts`` in a
real MongoDB-wire store, its event log in PostgreSQL, its queries cached in Redis under
the test's own key prefix."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from outbox.log import EventLog
from projections.document_generations import collections_at, generation_of
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.query_service import Queries
from projections.redis_cache import RedisCache
from tests.cache_helpers import REDIS_URL
from tests.document_query_fixtures import DocAccounts
from tests.projection_fixtures import append_tenant_events

Event = tuple[str | None, str, str, dict[str, Any]]  # tenant, account, type, payload


@dataclass
class Bank:
    log: EventLog
    store: MongoStore
    url: str
    engine: ProjectionEngine
    queries: Queries

    def append(self, events: list[Event]) -> None:
        append_tenant_events(self.log, events)
        self.engine.catch_up(deadline=30)

    def physical_accounts(self) -> str:
        """The name of the collection ``doc_accounts`` is read from now."""
        generation = generation_of(self.store.database, "doc_accounts")
        return collections_at(DocAccounts(), generation)["doc_accounts"]


@pytest.fixture
def bank(
    pg_database: Callable[[], str], mongo_database: Callable[[], str], redis_key_prefix: str
) -> Iterator[Bank]:
    log = EventLog(pg_database())
    log.create_tables()
    url = mongo_database()
    store = MongoStore(url)
    store.create_tables([DocAccounts()])
    cache = RedisCache(REDIS_URL, key_prefix=redis_key_prefix, near_cache_size=0, timeout=5.0)
    options = {"max_attempts": 2, "retry_backoff": 0.001, "cache": cache}
    engine = ProjectionEngine(LogReader(log), [DocAccounts()], {"docs": store}, **options)
    queries = Queries.from_engine(engine, log.engine)
    yield Bank(log, store, url, engine, queries)
    queries.close()
    engine.close()
    cache.close()
    log.close()


def cached_entries(prefix: str) -> set[str]:
    """The cache entries in Redis, by key (after ``<prefix>e:doc_accounts:``)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        start = f"{prefix}e:doc_accounts:"
        return {k.decode()[len(start) :] for k in client.scan_iter(match=start + "*")}
    finally:
        client.close()


def opened(tenant: str, account: str, owner: str) -> Event:
    return (tenant, account, "Opened", {"owner": owner})
