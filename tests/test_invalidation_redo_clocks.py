"""The sweeper redoes a journaled cache invalidation once it is ``cache.redo_after`` old on
the read store's clock, whatever this host's clock says.

The store is made to run an hour off this host, as a database server with a skewed clock
(or a worker host with one) does: its ``now()`` is a function of the database
(``public.now()``, found before ``pg_catalog``'s by the database's ``search_path``). The
MongoDB-wire test server runs on this host's clock, so there this host's clock, as the
store's module reads it, is made to run an hour off instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tests.cache_helpers import REDIS_URL, redis_prefix
from tests.document_bank_helpers import Bank
from tests.metrics_helpers import skew_database_clock
from workers.runtime import build_runtime

REDO_AFTER = 60.0


@pytest.fixture
def skewed_runtime(
    request: pytest.FixtureRequest,
    pg_database: Callable[[], str],
    make_settings: Callable[..., Any],
) -> Iterator[Any]:
    """A runtime whose PostgreSQL store runs ``request.param`` off this host, with a cache
    entry of ``totals`` tagged ``account:a1`` holding ``"old"``."""
    url = pg_database()
    skew_database_clock(url, request.param)
    with redis_prefix() as prefix:
        settings = make_settings(
            url,
            projections=["tests.projection_fixtures"],
            cache={"url": REDIS_URL, "key_prefix": prefix},
        )
        runtime = build_runtime(settings)
        try:
            assert _cached(runtime, "old") == "old"
            yield runtime
        finally:
            runtime.close()


def _cached(runtime: Any, load: str) -> Any:
    return runtime.cache.get_or_load("totals", "a1", ["account:a1"], lambda: load)


def _journal_aged(runtime: Any, seconds: int) -> Any:
    """Journal an invalidation of ``account:a1`` as if a crash left it ``seconds`` ago by
    the store's clock; returns the store."""
    store = runtime.engine.store_of("totals")
    assert store.journal_invalidation("totals", ["account:a1"]) is not None
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE rm_invalidations SET created_at = now() - make_interval(secs => :s)"),
            {"s": seconds},
        )
    return store


@pytest.mark.parametrize("skewed_runtime", ["1 hour"], indirect=True)
def test_a_host_clock_behind_the_store_does_not_delay_a_due_redo(skewed_runtime: Any) -> None:
    store = _journal_aged(skewed_runtime, 120)

    assert skewed_runtime.engine.redo_invalidations(older_than=REDO_AFTER) == 1

    assert store.pending_invalidations() == []
    assert _cached(skewed_runtime, "new") == "new"  # the stale entry is gone


@pytest.mark.parametrize("skewed_runtime", ["-1 hour"], indirect=True)
def test_a_host_clock_ahead_of_the_store_does_not_redo_early(skewed_runtime: Any) -> None:
    store = _journal_aged(skewed_runtime, 5)

    assert skewed_runtime.engine.redo_invalidations(older_than=REDO_AFTER) == 0

    assert [i.tags for i in store.pending_invalidations()] == [("account:a1",)]
    assert _cached(skewed_runtime, "new") == "old"


def test_a_fresh_journal_row_waits_and_an_old_one_is_redone_on_sqlite(
    sqlite_database: Callable[[], str], make_settings: Callable[..., Any]
) -> None:
    with redis_prefix() as prefix:
        settings = make_settings(
            sqlite_database(),
            projections=["tests.projection_fixtures"],
            cache={"url": REDIS_URL, "key_prefix": prefix},
        )
        runtime = build_runtime(settings)
        try:
            store = runtime.engine.store_of("totals")
            assert store.journal_invalidation("totals", ["account:a1"]) is not None
            assert runtime.engine.redo_invalidations(older_than=REDO_AFTER) == 0
            with store.engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "UPDATE rm_invalidations SET created_at = datetime('now', '-120 seconds')"
                    )
                )
            assert runtime.engine.redo_invalidations(older_than=REDO_AFTER) == 1
            assert store.pending_invalidations() == []
        finally:
            runtime.close()


def _host_clock(monkeypatch: pytest.MonkeyPatch, offset: timedelta) -> None:
    """This host's clock, as the document store's module reads it, ``offset`` off."""

    class Skewed(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.now(tz) + offset

    monkeypatch.setattr("projections.mongo_store.datetime", Skewed)


def _journal_document(bank: Bank, seconds: int) -> None:
    """Journal an invalidation of ``account:a1`` (a cached entry of ``doc_accounts``) as if
    a crash left it ``seconds`` ago by the server's clock."""
    cache = bank.engine.cache
    assert cache.get_or_load("doc_accounts", "a1", ["account:a1"], lambda: "old") == "old"
    assert bank.store.journal_invalidation("doc_accounts", ["account:a1"]) is not None
    local = bank.store.client.admin.command("hello")["localTime"]
    stamp = (local if local.tzinfo else local.replace(tzinfo=UTC)) - timedelta(seconds=seconds)
    bank.store.database["rm_invalidations"].update_many({}, {"$set": {"created_at": stamp}})


def test_a_host_clock_behind_mongodb_does_not_delay_a_due_redo(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank.store.journal_invalidations = True
    _journal_document(bank, 120)
    _host_clock(monkeypatch, -timedelta(hours=1))

    assert bank.engine.redo_invalidations(older_than=REDO_AFTER) == 1

    assert bank.store.pending_invalidations() == []
    cache = bank.engine.cache
    assert cache.get_or_load("doc_accounts", "a1", ["account:a1"], lambda: "new") == "new"


def test_a_host_clock_ahead_of_mongodb_does_not_redo_early(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank.store.journal_invalidations = True
    _journal_document(bank, 5)
    _host_clock(monkeypatch, timedelta(hours=1))

    assert bank.engine.redo_invalidations(older_than=REDO_AFTER) == 0

    assert [i.tags for i in bank.store.pending_invalidations()] == [("account:a1",)]
    cache = bank.engine.cache
    assert cache.get_or_load("doc_accounts", "a1", ["account:a1"], lambda: "new") == "old"


def test_a_document_journal_is_stamped_by_the_server(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written on a host an hour behind, a fresh journal document is not an hour old."""
    bank.store.journal_invalidations = True
    _host_clock(monkeypatch, -timedelta(hours=1))
    assert bank.store.journal_invalidation("doc_accounts", ["account:a1"]) is not None
    _host_clock(monkeypatch, timedelta(0))

    assert bank.engine.redo_invalidations(older_than=REDO_AFTER) == 0
    assert [i.tags for i in bank.store.pending_invalidations()] == [("account:a1",)]
