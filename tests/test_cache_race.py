"""Caches never stay stale: 16 reader threads hammer cached reads of the accounts that the
real engine keeps applying events to (PostgreSQL read model, Redis cache).

Three caches share one Redis prefix: ``A`` is the engine's own (near cache on; the same
process as the invalidations), ``B`` another instance without a near cache, ``C``
another instance with one (as another process would be). While the writer runs, every
read through A or B must return a value at least as new as the last batch whose
invalidation had returned before the read began; C's near cache learns of invalidations
through Redis's pushes, so C is checked once its pushes are in (``sync``). After the
writer stops, one more read through each cache must equal the read model exactly.

The second test races readers against whole-projection wipes (a replay's swap), which
Redis does a chunk at a time.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis
import sqlalchemy as sa

from outbox.db import sqlalchemy_url
from projections.cache import Cache
from projections.redis_cache import RedisCache
from tests.cache_helpers import REDIS_URL, RecordingHooks, append, fill_entries, redis_prefix
from tests.projection_fixtures import account_totals
from workers.runtime import build_runtime

ACCOUNTS = [f"acct-{i}" for i in range(6)]
PHASES = 4
BATCHES_PER_PHASE = 25


def test_sixteen_readers_never_see_or_keep_a_stale_value(
    pg_database: Callable[[], str], make_settings: Callable[..., Any]
) -> None:
    url = pg_database()
    with redis_prefix() as prefix:
        settings = make_settings(
            url,
            projections=["tests.projection_fixtures"],
            cache={
                "url": REDIS_URL,
                "key_prefix": prefix,
                "single_flight_wait": "20ms",
                "connect_timeout": "5s",  # a loaded test machine is no outage
            },
        )
        runtime = build_runtime(settings)
        hooks = RecordingHooks()
        runtime.engine.cache.hooks = hooks
        other = RedisCache(REDIS_URL, key_prefix=prefix, near_cache_size=0, timeout=5)
        remote = RedisCache(REDIS_URL, key_prefix=prefix, timeout=5)
        read_model = sa.create_engine(sqlalchemy_url(url), pool_size=20, max_overflow=0)
        try:
            _race(runtime, runtime.engine.cache, other, remote, read_model)
            assert hooks.hits > 1000 and hooks.misses > 10  # both paths were exercised
        finally:
            read_model.dispose()
            other.close()
            remote.close()
            runtime.close()


def _race(runtime: Any, local: Cache, other: Cache, remote: RedisCache, db: sa.Engine) -> None:
    def load(account: str, slow: bool = False) -> dict[str, Any] | None:
        with db.connect() as conn:
            row = conn.execute(
                sa.select(account_totals).where(account_totals.c.account == account)
            ).first()
        if slow:  # a slow query: widens the window in which an invalidation can overtake it
            time.sleep(random.uniform(0, 0.01))
        return None if row is None else dict(row._mapping)

    def read(cache: Cache, account: str, slow: bool = False) -> dict[str, Any] | None:
        tags = [f"account:{account}"]
        # short lives: loads start at every phase of the writer's commits, not only after them
        ttl = random.uniform(0.005, 0.05) if slow else None
        return cache.get_or_load("totals", account, tags, lambda: load(account, slow), ttl=ttl)

    counts = dict.fromkeys(ACCOUNTS, 0)
    floor = dict.fromkeys(ACCOUNTS, 0)  # events applied AND invalidated, per account
    stale: list[tuple[str, str, int, int]] = []
    failures: list[BaseException] = []
    rng = random.Random(7)

    def reader(name: str, cache: Cache, checked: bool, stop: threading.Event) -> None:
        mine = random.Random(name)
        try:
            while not stop.is_set():
                account = mine.choice(ACCOUNTS)
                at_least = floor[account]
                value = read(cache, account, slow=True)
                seen = 0 if value is None else value["events"]
                if checked and seen < at_least:
                    stale.append((name, account, seen, at_least))
                time.sleep(0.0005)  # lets the writer have the GIL now and then
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    for phase in range(PHASES):
        stop = threading.Event()
        caches = [("A", local, True)] * 6 + [("B", other, True)] * 5 + [("C", remote, False)] * 5
        threads = [
            threading.Thread(target=reader, args=(f"{name}{i}-{phase}", cache, checked, stop))
            for i, (name, cache, checked) in enumerate(caches)
        ]
        for thread in threads:
            thread.start()
        try:
            for _ in range(BATCHES_PER_PHASE):
                events = []
                for account in rng.sample(ACCOUNTS, rng.randint(1, 3)):
                    for _ in range(rng.randint(1, 3)):
                        counts[account] += 1
                        payload = {"amount": 1, "seq": counts[account]}
                        events.append(("account", account, "Deposited", payload))
                append(runtime.log, "bank", events)
                runtime.engine.catch_up(["totals"])  # commit, then invalidate
                floor.update(counts)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert not failures, failures
        assert not stale, stale[:5]
        remote.sync()
        for cache in (local, other, remote):
            for account in ACCOUNTS:
                assert read(cache, account) == load(account), (phase, account)
                assert (load(account) or {"events": 0})["events"] == counts[account]
    assert runtime.engine.store_of("totals").pending_invalidations() == []


WIPES = 4
COLD = 20_000
HOT = [f"h{i}" for i in range(2_000)]  # short-lived: loads are always in flight


def test_readers_racing_a_chunked_wipe_never_keep_an_old_value() -> None:
    """A replay swaps a projection's tables (its model goes from version n-1 to n), then
    wipes its 20,000 cached entries 500 at a time while 16 readers keep loading (mostly
    short-lived entries, so that loads are always in flight) and storing. A value loaded
    from version n-1 is never stored after the wipe began, however its load straddles the
    wipe's scripts: once the wipe returns, every entry of the projection holds version n
    and no read through A or B returns less (C once synced). Without the counter bump (or
    the ``w`` stamp) at the start of the wipe, old values are found after every wipe."""
    with redis_prefix() as prefix, redis.Redis.from_url(REDIS_URL) as client:
        wiper = RedisCache(REDIS_URL, key_prefix=prefix, wipe_chunk=500, timeout=5)  # A
        other = RedisCache(REDIS_URL, key_prefix=prefix, near_cache_size=0, timeout=5)  # B
        remote = RedisCache(REDIS_URL, key_prefix=prefix, timeout=5)  # C
        model = {"version": 0}
        floor = {"version": 0}  # swapped AND wiped
        stale: list[tuple[str, str, int, int]] = []
        left_old: list[tuple[int, bytes]] = []
        failures: list[BaseException] = []

        def load() -> dict[str, int]:
            seen = model["version"]
            time.sleep(random.uniform(0, 0.02))  # a slow query: the swap may commit meanwhile
            return {"version": seen}

        def reader(name: str, cache: Cache, checked: bool, stop: threading.Event) -> None:
            mine = random.Random(name)
            try:
                while not stop.is_set():
                    hot = mine.random() < 0.8
                    key = mine.choice(HOT) if hot else f"k{mine.randrange(COLD)}"
                    ttl = mine.uniform(0.3, 1.0) if hot else None
                    at_least = floor["version"]
                    seen = cache.get_or_load("catalog", key, [], load, ttl=ttl)["version"]
                    if checked and seen < at_least:
                        stale.append((name, key, seen, at_least))
                    time.sleep(0.0002)
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        stop = threading.Event()
        caches = [("A", wiper, True)] * 6 + [("B", other, True)] * 5 + [("C", remote, False)] * 5
        threads = [
            threading.Thread(target=reader, args=(f"{name}{i}", cache, checked, stop))
            for i, (name, cache, checked) in enumerate(caches)
        ]
        for thread in threads:
            thread.start()
        try:
            keys = [f"k{i}" for i in range(COLD)] + HOT
            entries = [f"{prefix}e:catalog:{key}" for key in keys]
            for version in range(1, WIPES + 1):
                fill_entries(prefix, "catalog", COLD, {"version": version - 1}, tags=0)
                time.sleep(0.1)  # the readers hit and load version - 1
                model["version"] = version  # the swap commits ...
                wiper.invalidate_projection("catalog")  # ... then the cache is wiped
                floor["version"] = version
                for blob in client.mget(entries):
                    if blob is not None and orjson.loads(blob.partition(b"|")[2]) != {
                        "version": version
                    }:
                        left_old.append((version, blob))
                time.sleep(0.05)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        try:
            assert not failures, failures
            assert not left_old, left_old[:5]
            assert not stale, stale[:5]
            remote.sync()
            for cache in (wiper, other, remote):
                for key in HOT[:10] + ["k1", "k2"]:
                    assert cache.get_or_load("catalog", key, [], load) == {"version": WIPES}
        finally:
            wiper.close()
            other.close()
            remote.close()
