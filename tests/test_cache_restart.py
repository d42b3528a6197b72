"""A cache Redis that crashes and restarts from its RDB (or AOF) file, as redis-server does
by default (``save 3600 1 300 100 60 10000``), brings back the entries as the file holds
them: those invalidated after it was written too. They must not be served."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from projections.redis_cache import RedisCache
from tests.cache_helpers import fill_entries, fresh_prefix, near_cache_live, read_totals


@pytest.fixture(params=[0, 1000], ids=["no-near", "near"])
def caches(
    request: pytest.FixtureRequest, private_redis: Any
) -> Iterator[Callable[[], RedisCache]]:
    """RedisCaches (one per process, say) sharing a prefix on a private Redis."""
    servers = [private_redis()]
    prefix = fresh_prefix()
    made: list[RedisCache] = []

    def make() -> RedisCache:
        cache = RedisCache(private_redis.url, key_prefix=prefix, near_cache_size=request.param)
        made.append(cache)
        return near_cache_live(cache)

    def crash_and_restart() -> None:
        """SIGKILL the server (after it wrote its RDB file), then start it on that file."""
        with redis.Redis.from_url(private_redis.url) as client:
            run = client.info("server")["run_id"]
        servers[-1].kill()
        servers[-1].wait()
        servers.append(private_redis())
        with redis.Redis.from_url(private_redis.url) as client:
            assert client.info("server")["run_id"] != run

    make.url = private_redis.url  # type: ignore[attr-defined]
    make.crash_and_restart = crash_and_restart  # type: ignore[attr-defined]
    yield make
    for cache in made:
        cache.close()


def test_entries_invalidated_after_the_snapshot_are_not_served_after_a_restart(
    caches: Any,
) -> None:
    worker, reader = caches(), caches()
    rows = {"a1": {"total": "5"}, "a2": {"total": "1"}}
    for key, row in rows.items():
        assert [read_totals(reader, row, key), read_totals(reader, row, key)] == [row] * 2  # cached
    with redis.Redis.from_url(caches.url) as client:
        client.save()  # a snapshot, as the save points take one
    rows["a1"]["total"] = "12"  # a batch applied, then invalidated
    worker.invalidate("totals", ["account:a1"])
    reader.sync()  # another process's invalidation: its near cache drops a1 on the push
    assert read_totals(reader, rows["a1"], "a1") == {"total": "12"}
    caches.crash_and_restart()
    time.sleep(0.2)  # the near cache's listener reconnects
    assert [read_totals(reader, rows["a1"], "a1") for _ in range(3)] == [{"total": "12"}] * 3
    assert read_totals(caches(), rows["a1"], "a1") == {"total": "12"}  # a process started since
    assert read_totals(reader, rows["a2"], "a2") == {"total": "1"}
    # the cache works on: entries are stored and invalidated again
    rows["a2"]["total"] = "2"
    assert read_totals(reader, {"total": "unused"}, "a2") == {"total": "1"}
    worker.invalidate("totals", ["account:a2"])
    reader.sync()
    assert read_totals(reader, rows["a2"], "a2") == {"total": "2"}


def test_a_value_loaded_before_the_crash_is_not_stored_after_it(
    caches: Any,
) -> None:
    cache = caches()
    with redis.Redis.from_url(caches.url) as client:
        client.save()
    loads: list[str] = []

    def load() -> str:
        if not loads:  # the row changes and Redis crashes while this load runs
            caches().invalidate("totals", ["account:a1"])
            caches.crash_and_restart()
        loads.append("loaded")
        return "old" if len(loads) == 1 else "new"

    assert cache.get_or_load("totals", "a1", ["account:a1"], load) == "old"
    assert cache.get_or_load("totals", "a1", ["account:a1"], load) == "new"
    assert cache.get_or_load("totals", "a1", ["account:a1"], load) == "new"


def test_a_restarted_redis_is_emptied_in_chunks_before_the_first_read(caches: Any) -> None:
    cache = caches()
    cache.get_or_load("totals", "a1", ["account:a1"], lambda: "kept")  # registers "totals"
    keys = fill_entries(cache.prefix, "totals", 5_000, "old", url=caches.url)
    with redis.Redis.from_url(caches.url) as client:
        client.save()
    caches.crash_and_restart()
    chunked = RedisCache(caches.url, key_prefix=cache.prefix, near_cache_size=0, wipe_chunk=700)
    try:
        assert chunked.get_or_load("totals", "k7", ["item:7"], lambda: "new") == "new"
    finally:
        chunked.close()
    with redis.Redis.from_url(caches.url) as client:
        entries = [f"{cache.prefix}e:totals:{key}" for key in keys if key != "k7"]
        assert client.exists(*entries, f"{cache.prefix}e:totals:a1") == 0
        assert client.get(f"{cache.prefix}e:totals:k7").endswith(b'"new"')  # stored since
        assert client.scard(f"{cache.prefix}d:totals") == 0


def test_a_redis_user_without_info_keeps_a_working_cache(private_redis: Any) -> None:
    """The restart check needs INFO; a user refused it is warned once, and the cache works."""
    private_redis()
    with redis.Redis.from_url(private_redis.url) as admin:
        admin.acl_setuser(
            "cacher", enabled=True, passwords=["+secret"], commands=["+@all", "-info"], keys=["*"]
        )
    url = private_redis.url.replace("redis://", "redis://cacher:secret@", 1)
    cache = RedisCache(url, key_prefix=fresh_prefix(), near_cache_size=0)
    try:
        with capture_logs() as logs:
            assert cache.get_or_load("totals", "a1", ["account:a1"], lambda: "old") == "old"
            assert cache.get_or_load("totals", "a1", ["account:a1"], lambda: "new") == "old"
            cache.invalidate("totals", ["account:a1"])
            assert cache.get_or_load("totals", "a1", ["account:a1"], lambda: "new") == "new"
        warnings = [e["event"] for e in logs if e["log_level"] == "warning"]
        assert len(warnings) == 1 and "INFO refused" in warnings[0]
    finally:
        cache.close()


def test_a_redis_restarted_past_its_maxmemory_is_still_emptied(caches: Any) -> None:
    """A Redis that crashed full (``noeviction``) comes back full: the restart's wipe and
    the invalidations after it still go through."""
    cache = caches()
    assert cache.get_or_load("totals", "a1", ["account:a1"], lambda: "old") == "old"
    with redis.Redis.from_url(caches.url) as client:
        client.save()
    caches.crash_and_restart()
    with redis.Redis.from_url(caches.url) as admin:
        admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) // 2)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            admin.set("other-app:1", "x")
        assert admin.exists(f"{cache.prefix}e:totals:a1") == 1
    fresh = caches()
    assert fresh.get_or_load("totals", "a1", ["account:a1"], lambda: "new") == "new"
    fresh.invalidate("totals", ["account:a2"])  # raised CacheError: every connection failed
    with redis.Redis.from_url(caches.url) as admin:
        assert admin.exists(f"{cache.prefix}e:totals:a1") == 0
