"""Queries run from many threads share what they learned of ``cache_tags`` queries (the
tags of each key's result): their bookkeeping must stay whole under concurrency."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from projections import Queries, learned_tags
from projections.cache import MemoryCache
from projections.sql_store import SqlStore
from tests.query_fixtures import ShopOrders, customers

_EMAILS = [f"c{i}@x.io" for i in range(6)]


@contextmanager
def _slow_learning() -> Iterator[None]:
    """Threads started inside pause at each line of ``_learn``: with the GIL, CPython 3.11
    never switches threads between its statements, which a free-threaded build, or a
    finalizer run by the collector there, does. The pause widens that window."""

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            time.sleep(0.0002)
        return local

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_name == "_learn" else None

    threading.settrace(tracer)
    try:
        yield
    finally:
        threading.settrace(None)  # type: ignore[arg-type]


@pytest.fixture
def shop_queries(
    sqlite_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Queries]:
    """Queries of ShopOrders on SQLite through a memory cache, remembering the tags of two
    keys at most (six are read: every read of one evicts another)."""
    monkeypatch.setattr(learned_tags, "_LEARNED_KEYS", 2)
    store = SqlStore(sqlite_database())
    customers.metadata.create_all(store.engine)
    with store.engine.begin() as conn:
        for i, email in enumerate(_EMAILS):
            conn.execute(customers.insert(), {"customer": f"c{i}", "email": email, "name": "N"})
    queries = Queries([ShopOrders()], {"default": store}, store.engine, cache=MemoryCache())
    try:
        yield queries
    finally:
        queries.close()
        store.close()


def test_threads_learning_tags_at_once_all_get_their_rows(shop_queries: Queries) -> None:
    errors: list[BaseException] = []
    wrong: list[tuple[str, Any]] = []

    def read(offset: int) -> None:
        try:
            for n in range(60):
                email = _EMAILS[(n + offset) % len(_EMAILS)]
                row = shop_queries.run("shop_orders", "by_email", email).value
                if row is None or row["email"] != email:
                    wrong.append((email, row))
        except BaseException as exc:  # reported below
            errors.append(exc)

    with _slow_learning():
        threads = [threading.Thread(target=read, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert wrong == []
    learned = dict(shop_queries._learned_tags._learned)
    assert len(learned) <= 2
    for (projection, key), tags in learned.items():
        customer = _EMAILS.index(key.split('"')[1])
        assert (projection, tags) == ("shop_orders", frozenset({f"customer:c{customer}"}))
