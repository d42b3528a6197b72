"""Query caches: one contract run on MemoryCache and RedisCache (with and without its near
cache), then what only Redis does: bounded tag sets, near-cache coherence across
instances, and serving from the read model while Redis is unreachable."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from structlog.testing import capture_logs

from projections.cache import Cache, CacheError, MemoryCache, open_cache
from projections.redis_cache import RedisCache
from tests.cache_helpers import (
    REDIS_URL,
    RecordingHooks,
    append,
    dead_redis_url,
    fill_entries,
    fresh_prefix,
    redis_keys,
    redis_prefix,
)
from tests.projection_fixtures import account_totals
from workers.runtime import build_runtime


class Counter:
    """A loader that returns a new value each call."""

    def __init__(self, value: Callable[[int], Any] = lambda n: {"n": n}) -> None:
        self.calls = 0
        self.value = value

    def __call__(self) -> Any:
        self.calls += 1
        return self.value(self.calls)


def _wait_live(cache: Cache) -> Cache:
    near = getattr(cache, "near", None)
    if near is not None:
        near.start()
    deadline = time.monotonic() + 5
    while near is not None and not near.live and time.monotonic() < deadline:
        time.sleep(0.01)
    return cache


@pytest.fixture(params=["memory", "redis", "redis-no-near"])
def cache(request: pytest.FixtureRequest) -> Iterator[Cache]:
    hooks = RecordingHooks()
    if request.param == "memory":
        made: Cache = MemoryCache(hooks=hooks, single_flight_wait=5.0)
        yield made
        made.close()
        return
    with redis_prefix() as prefix:
        made = RedisCache(
            REDIS_URL,
            key_prefix=prefix,
            near_cache_size=0 if request.param == "redis-no-near" else 1000,
            single_flight_wait=5.0,
            hooks=hooks,
        )
        try:
            yield _wait_live(made)
        finally:
            made.close()


class TestCacheContract:
    """What every Cache does, whatever the backend."""

    def test_miss_then_hits(self, cache: Cache) -> None:
        load = Counter()
        assert cache.get_or_load("catalog", "p1", ["product:1"], load) == {"n": 1}
        for _ in range(3):
            assert cache.get_or_load("catalog", "p1", ["product:1"], load) == {"n": 1}
        assert load.calls == 1
        assert (cache.hooks.misses, cache.hooks.hits) == (1, 3)  # type: ignore[attr-defined]

    def test_invalidation_drops_only_entries_with_that_tag(self, cache: Cache) -> None:
        one, two = Counter(), Counter()
        cache.get_or_load("catalog", "p1", ["product:1", "stock:1"], one)
        cache.get_or_load("catalog", "p2", ["product:2"], two)
        cache.invalidate("catalog", ["stock:1"])
        assert cache.get_or_load("catalog", "p1", ["product:1", "stock:1"], one) == {"n": 2}
        assert cache.get_or_load("catalog", "p2", ["product:2"], two) == {"n": 1}
        assert cache.hooks.invalidations == [("catalog", 1)]  # type: ignore[attr-defined]

    def test_tags_belong_to_their_projection(self, cache: Cache) -> None:
        catalog, summary = Counter(), Counter()
        cache.get_or_load("catalog", "k", ["product:1"], catalog)
        cache.get_or_load("summary", "k", ["product:1"], summary)
        cache.invalidate("summary", ["product:1"])
        assert cache.get_or_load("catalog", "k", ["product:1"], catalog) == {"n": 1}
        assert cache.get_or_load("summary", "k", ["product:1"], summary) == {"n": 2}

    def test_invalidate_projection_drops_every_entry(self, cache: Cache) -> None:
        loads = [Counter() for _ in range(5)]
        for i, load in enumerate(loads):
            cache.get_or_load("catalog", f"k{i}", [f"product:{i}"], load)
        other = Counter()
        cache.get_or_load("summary", "k", [], other)
        cache.invalidate_projection("catalog")
        for i, load in enumerate(loads):
            assert cache.get_or_load("catalog", f"k{i}", [f"product:{i}"], load) == {"n": 2}
        assert cache.get_or_load("summary", "k", [], other) == {"n": 1}

    def test_value_loaded_before_an_invalidation_is_never_stored(self, cache: Cache) -> None:
        calls = []

        def load() -> dict[str, Any]:
            calls.append(1)
            if len(calls) == 1:  # the read model changes while this load is in flight
                cache.invalidate("catalog", ["product:1"])
                return {"price": "old"}
            return {"price": "new"}

        assert cache.get_or_load("catalog", "p1", ["product:1"], load) == {"price": "old"}
        assert cache.get_or_load("catalog", "p1", ["product:1"], load) == {"price": "new"}
        assert cache.get_or_load("catalog", "p1", ["product:1"], load) == {"price": "new"}
        assert len(calls) == 2

    def test_projection_wipe_during_a_load_is_not_undone(self, cache: Cache) -> None:
        def load() -> dict[str, Any]:
            cache.invalidate_projection("catalog")
            return {"price": "old"}

        cache.get_or_load("catalog", "p1", ["product:1"], load)
        assert cache.get_or_load("catalog", "p1", ["product:1"], lambda: "new") == "new"

    def test_unrelated_invalidation_during_a_load_still_caches(self, cache: Cache) -> None:
        def load() -> dict[str, Any]:
            cache.invalidate("catalog", ["product:2"])
            return {"price": 1}

        cache.get_or_load("catalog", "p1", ["product:1"], load)
        assert cache.get_or_load("catalog", "p1", ["product:1"], lambda: "reloaded") == {"price": 1}

    def test_entries_expire(self, cache: Cache) -> None:
        load = Counter()
        cache.get_or_load("catalog", "p1", [], load, ttl=0.15)
        time.sleep(0.3)
        assert cache.get_or_load("catalog", "p1", [], load, ttl=0.15) == {"n": 2}

    def test_one_loader_per_key(self, cache: Cache) -> None:
        load = Counter()
        started = threading.Barrier(8)
        results: list[Any] = []

        def slow() -> Any:
            time.sleep(0.2)
            return load()

        def reader() -> None:
            started.wait()
            results.append(cache.get_or_load("catalog", "hot", ["product:1"], slow))

        threads = [threading.Thread(target=reader) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert load.calls == 1
        assert results == [{"n": 1}] * 8

    def test_a_waiter_never_takes_a_value_an_invalidation_overtook(self, cache: Cache) -> None:
        """A reader that arrives while another loads the same key, after an invalidation
        (from another process, for Redis) overtook that load, loads afresh."""
        other: Cache = cache
        if isinstance(cache, RedisCache):
            other = RedisCache(REDIS_URL, key_prefix=cache.prefix, near_cache_size=0)
        loading, release = threading.Event(), threading.Event()

        def slow_old() -> str:
            loading.set()
            release.wait(10)
            return "old"

        results: dict[str, Any] = {}
        leader = threading.Thread(
            target=lambda: results.update(
                leader=cache.get_or_load("catalog", "p1", ["product:1"], slow_old)
            )
        )
        leader.start()
        try:
            assert loading.wait(10)
            other.invalidate("catalog", ["product:1"])
            waiter = threading.Thread(
                target=lambda: results.update(
                    waiter=cache.get_or_load("catalog", "p1", ["product:1"], lambda: "new")
                )
            )
            waiter.start()
            time.sleep(0.3)  # the waiter joins the leader's flight
            release.set()
            waiter.join()
        finally:
            release.set()
            leader.join()
            if other is not cache:
                other.close()
        assert results == {"leader": "old", "waiter": "new"}
        assert cache.get_or_load("catalog", "p1", ["product:1"], lambda: "newer") == "new"

    def test_hit_and_miss_return_the_same_json_shape(self, cache: Cache) -> None:
        value = {"price": Decimal("9.90"), "tags": ("a", "b"), 7: None}
        first = cache.get_or_load("catalog", "p1", [], lambda: value)
        second = cache.get_or_load("catalog", "p1", [], lambda: "unused")
        assert first == second == {"price": "9.90", "tags": ["a", "b"], "7": None}

    def test_a_failing_load_is_not_cached_and_does_not_block_the_next(self, cache: Cache) -> None:
        def broken() -> Any:
            raise LookupError("read model down")

        with pytest.raises(LookupError):
            cache.get_or_load("catalog", "p1", [], broken)
        started = time.monotonic()
        assert cache.get_or_load("catalog", "p1", [], lambda: 1) == 1
        assert time.monotonic() - started < 4  # the loader's lock was released (wait is 5 s)

    def test_unserialisable_values_are_refused_clearly(self, cache: Cache) -> None:
        with pytest.raises(TypeError, match="catalog:p1.*not JSON-serialisable"):
            cache.get_or_load("catalog", "p1", [], lambda: object())


# -- Redis only ----------------------------------------------------------------------------


def _store_many(
    cache: RedisCache, projection: str, entries: list[tuple[str, list[str]]], ttl_ms: int
) -> None:
    """Store entries with the cache's own store script, pipelined (5,000 per round trip)."""
    snapshot = cache._begin(args=[cache.prefix, projection, "-", 0])[1]
    with redis.Redis.from_url(REDIS_URL) as client:
        sha = client.script_load(cache._store.script)
        for start in range(0, len(entries), 5_000):
            with client.pipeline(transaction=False) as pipe:
                for key, tags in entries[start : start + 5_000]:
                    pipe.evalsha(
                        sha, 0, cache.prefix, projection, key, snapshot, ttl_ms, b"1", "0", *tags
                    )
                assert all(r == 1 for r in pipe.execute())


def test_tag_sets_stay_bounded_after_100000_keys_expire() -> None:
    with redis_prefix() as prefix:
        cache = RedisCache(REDIS_URL, key_prefix=prefix, near_cache_size=0)
        try:
            tags = [f"product:{i}" for i in range(200)]
            # one long-lived entry per tag keeps every tag set alive ...
            _store_many(cache, "catalog", [(f"keep:{t}", [t]) for t in tags], 120_000)
            # ... while 100,000 short-lived ones (500 per tag) come and go
            short = [(f"k{i}", [tags[i % 200]]) for i in range(100_000)]
            _store_many(cache, "catalog", short, 2_000)
            written = time.monotonic()
            with redis.Redis.from_url(REDIS_URL) as client:
                assert client.zcard(f"{prefix}a:catalog") > 1000  # the sets did fill up
                time.sleep(max(0.0, written + 2.2 - time.monotonic()))
                # expired entries leave the sets at the next write to the set
                _store_many(cache, "catalog", [(f"new:{t}", [t]) for t in tags], 120_000)
                sizes = {client.zcard(f"{prefix}t:catalog:{t}") for t in tags}
                assert sizes == {2}
                assert client.zcard(f"{prefix}a:catalog") == 400
                ttl = client.pttl(f"{prefix}t:catalog:product:0")
                assert 0 < ttl <= 120_000
            # what is left under the prefix: 400 entries, 200 tag sets, the projection's
            # set, counter and the counter's first value, the projections' names and the
            # Redis run id last seen; 100,000 expired keys left no trace
            assert len(redis_keys(prefix)) == 400 + 200 + 3 + 2
        finally:
            cache.close()


def test_tag_sets_expire_with_their_last_entry() -> None:
    with redis_prefix() as prefix:
        cache = RedisCache(REDIS_URL, key_prefix=prefix, near_cache_size=0)
        try:
            for i in range(50):
                cache.get_or_load("catalog", f"k{i}", [f"product:{i}"], lambda: 1, ttl=0.3)
            time.sleep(0.6)
            with redis.Redis.from_url(REDIS_URL) as client:
                assert [client.exists(f"{prefix}t:catalog:product:{i}") for i in range(50)] == [
                    0
                ] * 50
                assert client.exists(f"{prefix}a:catalog") == 0
        finally:
            cache.close()


def test_near_copies_follow_invalidations_made_by_another_process() -> None:
    with redis_prefix() as prefix:
        reader = _wait_live(RedisCache(REDIS_URL, key_prefix=prefix))
        writer = _wait_live(RedisCache(REDIS_URL, key_prefix=prefix))
        try:
            assert isinstance(reader, RedisCache) and reader.near is not None
            values = iter(range(1, 100))

            def copied() -> None:
                """Read until a near copy is kept: the first read fills Redis; the push of
                that store may cancel the next read's copy, so retry a little."""
                for _ in range(50):
                    reader.get_or_load("catalog", "p1", ["product:1"], lambda: next(values))
                    if len(reader.near) == 1:
                        return
                    time.sleep(0.01)
                raise AssertionError("no near copy kept")

            copied()
            assert reader.get_or_load("catalog", "p1", ["product:1"], lambda: -1) == 1
            writer.invalidate("catalog", ["product:1"])
            reader.sync()
            assert len(reader.near) == 0
            assert reader.get_or_load("catalog", "p1", ["product:1"], lambda: next(values)) == 2
            # without sync(), the push alone drops the copy a moment later
            copied()
            writer.invalidate("catalog", ["product:1"])
            deadline = time.monotonic() + 5
            while len(reader.near) and time.monotonic() < deadline:
                time.sleep(0.005)
            assert reader.get_or_load("catalog", "p1", ["product:1"], lambda: next(values)) == 3
        finally:
            reader.close()
            writer.close()


def test_a_near_copy_read_before_an_invalidation_is_not_kept() -> None:
    """The reply of a read that an invalidation overtook (its push arrived between the
    request and the reply) never becomes a near copy."""
    with redis_prefix() as prefix:
        reader = _wait_live(RedisCache(REDIS_URL, key_prefix=prefix))
        writer = RedisCache(REDIS_URL, key_prefix=prefix, near_cache_size=0)
        try:
            assert isinstance(reader, RedisCache) and reader.near is not None
            writer.get_or_load("catalog", "p1", ["product:1"], lambda: "old")
            entry = f"{prefix}e:catalog:p1"
            ticket = reader.near.begin(entry)
            expires, _, old = reader.client.get(entry).partition(b"|")  # Redis answers "old"
            writer.invalidate("catalog", ["product:1"])  # ... then is overtaken
            reader.sync()  # the push is in before the reply is handled
            reader.near.fill(entry, ticket, old, int(expires))
            assert reader.near.get(entry) is None
            assert reader.get_or_load("catalog", "p1", ["product:1"], lambda: "new") == "new"
        finally:
            reader.close()
            writer.close()


def _timed_commands(cache: RedisCache) -> list[tuple[str, float]]:
    """Record ``(command, seconds)`` for every command ``cache`` sends from now on. A
    round trip's time bounds how long Redis was busy with the command."""
    calls: list[tuple[str, float]] = []
    send = cache.client.execute_command

    def timed(*args: Any, **options: Any) -> Any:
        started = time.perf_counter()
        try:
            return send(*args, **options)
        finally:
            calls.append((str(args[0]), time.perf_counter() - started))

    cache.client.execute_command = timed  # type: ignore[method-assign]
    return calls


def test_a_wipe_of_200000_entries_is_done_in_short_steps() -> None:
    """A projection's whole cache (a replay's swap) was wiped by one script: 200,000
    entries outlasted the client's 250 ms timeout (the wipe failed, to be redone, with a
    warning) while Redis served nobody else. Now each script deletes at most
    ``wipe_chunk`` entries; every entry of the projection is gone when the call returns,
    other projections keep theirs, and other processes' near copies go too."""
    with redis_prefix() as prefix:
        cache = RedisCache(REDIS_URL, key_prefix=prefix, near_cache_size=0)  # 250 ms timeout
        reader = _wait_live(RedisCache(REDIS_URL, key_prefix=prefix))
        try:
            assert isinstance(reader, RedisCache) and reader.near is not None
            fill_entries(prefix, "catalog", 200_000, {"v": "old"})
            fill_entries(prefix, "summary", 1_000, {"v": "kept"})
            reader.sync()
            for _ in range(50):  # near copies of a few entries (a push may cancel one)
                for i in range(5):
                    assert reader.get_or_load("catalog", f"k{i}", [], lambda: 0) == {"v": "old"}
                if len(reader.near) == 5:
                    break
            assert len(reader.near) == 5

            calls = _timed_commands(cache)
            with capture_logs() as logs:
                cache.invalidate_projection("catalog")
            scripts = [seconds for command, seconds in calls if command.startswith("EVAL")]
            assert len(scripts) >= 200_000 // cache.wipe_chunk
            assert max(scripts) < 0.1, sorted(scripts)[-5:]
            assert [e for e in logs if e["log_level"] in ("warning", "error")] == []

            # the counters are left, and the tag sets (they expire with what they held, as
            # before): no entry, no set of entries to delete
            left = {k.decode() for k in redis_keys(prefix)}
            assert {k for k in left if ":catalog" in k and f"{prefix}t:" not in k} == {
                f"{prefix}{kind}:catalog" for kind in ("s", "b", "w")
            }
            with redis.Redis.from_url(REDIS_URL) as client:
                summary = [f"{prefix}e:summary:k{i}" for i in range(1_000)]
                assert client.exists(*summary) == 1_000
                assert client.zcard(f"{prefix}a:summary") == 1_000
            reader.sync()
            assert len(reader.near) == 0
            assert reader.get_or_load("catalog", "k0", [], lambda: "new") == "new"
        finally:
            cache.close()
            reader.close()


def test_a_wipe_cut_short_is_finished_by_the_next_one() -> None:
    """Redis lost between two chunks of a wipe: the wipe raises (its journal row stays, to be
    redone); the redo deletes what the first left, along with what was cached since."""
    with redis_prefix() as prefix:
        cache = RedisCache(REDIS_URL, key_prefix=prefix, near_cache_size=0, wipe_chunk=500)
        try:
            fill_entries(prefix, "catalog", 3_000, {"v": "old"})
            chunks = 0
            send = cache.client.execute_command

            def flaky(*args: Any, **options: Any) -> Any:
                nonlocal chunks
                if args[0] == "EVALSHA" and args[1] == cache._wipe_chunk.sha:
                    chunks += 1
                    if chunks == 2:
                        raise redis.ConnectionError("lost between two chunks")
                return send(*args, **options)

            cache.client.execute_command = flaky  # type: ignore[method-assign]
            with pytest.raises(CacheError, match="invalidating catalog failed"):
                cache.invalidate_projection("catalog")
            with redis.Redis.from_url(REDIS_URL) as client:
                entries = [f"{prefix}e:catalog:k{i}" for i in range(3_000)]
                assert client.exists(*entries) == 2_500  # one chunk done
                # a load begun before the wipe is refused already; a new one is cached
                assert cache.get_or_load("catalog", "new", [], lambda: 1) == 1
                cache.client.execute_command = send  # type: ignore[method-assign]
                cache.invalidate_projection("catalog")
                assert client.exists(*entries, f"{prefix}e:catalog:new") == 0
                assert [k for k in redis_keys(prefix) if k.startswith(f"{prefix}x:".encode())] == []
                assert client.exists(f"{prefix}d:catalog") == 0
        finally:
            cache.close()


def test_a_tag_of_200000_entries_is_invalidated_in_short_steps() -> None:
    """A tag that many entries carry (``category:books``) was deleted by one script: 200,000
    entries outlasted the client's 250 ms timeout (the invalidation failed, to be redone,
    with a warning) while Redis served nobody else. Now each script deletes at most
    ``wipe_chunk`` entries; when the call returns every entry of the tag is gone, entries
    without the tag and other projections' are kept, and a load begun before the
    invalidation is refused."""
    with redis_prefix() as prefix:
        cache = RedisCache(REDIS_URL, key_prefix=prefix, near_cache_size=0)  # 250 ms timeout
        try:
            fill_entries(prefix, "catalog", 200_000, {"v": "old"}, tags=1)  # tag item:0
            fill_entries(prefix, "summary", 1_000, {"v": "kept"}, tags=1)
            assert cache.get_or_load("catalog", "other", ["item:1"], lambda: "kept") == "kept"
            calls = _timed_commands(cache)

            def load() -> str:  # the read model changes while this load is in flight
                with capture_logs() as logs:
                    cache.invalidate("catalog", ["item:0", "item:2"])
                assert [e for e in logs if e["log_level"] in ("warning", "error")] == []
                return "old"

            assert cache.get_or_load("catalog", "late", ["item:0"], load) == "old"
            scripts = [seconds for command, seconds in calls if command.startswith("EVAL")]
            assert len(scripts) >= 200_000 // cache.wipe_chunk
            assert max(scripts) < 0.1, sorted(scripts)[-5:]
            with redis.Redis.from_url(REDIS_URL) as client:
                catalog = [f"{prefix}e:catalog:k{i}" for i in range(200_000)]
                for start in range(0, len(catalog), 10_000):
                    assert client.exists(*catalog[start : start + 10_000]) == 0
                assert client.exists(f"{prefix}e:catalog:late") == 0  # refused: loaded before
                summary = [f"{prefix}e:summary:k{i}" for i in range(1_000)]
                assert client.exists(*summary) == 1_000
            assert [k for k in redis_keys(prefix) if k.startswith(f"{prefix}x:".encode())] == []
            assert cache.get_or_load("catalog", "other", ["item:1"], lambda: "new") == "kept"
            assert cache.get_or_load("catalog", "k0", ["item:0"], lambda: "new") == "new"
        finally:
            cache.close()


def test_a_tag_invalidation_cut_short_is_finished_by_the_redo() -> None:
    """Redis lost between two chunks of a large tag's invalidation: it raises (its journal
    row stays, to be redone); values loaded before it are refused already, and the redo
    deletes what the first left."""
    with redis_prefix() as prefix:
        cache = RedisCache(REDIS_URL, key_prefix=prefix, near_cache_size=0, wipe_chunk=500)
        try:
            fill_entries(prefix, "catalog", 3_000, {"v": "old"}, tags=1)
            chunks = 0
            send = cache.client.execute_command

            def flaky(*args: Any, **options: Any) -> Any:
                nonlocal chunks
                if args[0] == "EVALSHA" and args[1] == cache._wipe_chunk.sha:
                    chunks += 1
                    if chunks == 2:
                        raise redis.ConnectionError("lost between two chunks")
                return send(*args, **options)

            def load() -> str:
                cache.client.execute_command = flaky  # type: ignore[method-assign]
                with pytest.raises(CacheError, match="invalidating catalog failed"):
                    cache.invalidate("catalog", ["item:0"])
                cache.client.execute_command = send  # type: ignore[method-assign]
                return "old"

            assert cache.get_or_load("catalog", "late", ["item:0"], load) == "old"
            with redis.Redis.from_url(REDIS_URL) as client:
                entries = [f"{prefix}e:catalog:k{i}" for i in range(3_000)]
                assert client.exists(*entries) == 2_500  # one chunk done
                assert client.exists(f"{prefix}e:catalog:late") == 0  # loaded before: refused
                assert cache.get_or_load("catalog", "new", ["item:0"], lambda: 1) == 1
                cache.invalidate("catalog", ["item:0"])
                assert client.exists(*entries, f"{prefix}e:catalog:new") == 0
                assert [k for k in redis_keys(prefix) if k.startswith(f"{prefix}x:".encode())] == []
                assert client.exists(f"{prefix}d:catalog") == 0
        finally:
            cache.close()


def test_open_cache_follows_the_settings(make_settings: Callable[..., Any]) -> None:
    assert open_cache(make_settings("sqlite:///x.db").cache) is None
    memory = open_cache(make_settings("sqlite:///x.db", cache={"url": "memory://"}).cache)
    assert isinstance(memory, MemoryCache)
    prefix = fresh_prefix()
    settings = make_settings(
        "sqlite:///x.db", cache={"url": REDIS_URL, "key_prefix": prefix, "ttl": "2m"}
    )
    made = open_cache(settings.cache)
    try:
        assert isinstance(made, RedisCache)
        assert made.prefix == prefix and made.ttl == 120
    finally:
        assert made is not None
        made.close()


def test_bad_cache_settings_name_the_key(make_settings: Callable[..., Any]) -> None:
    from config import ConfigError

    with pytest.raises(ConfigError, match="cache.url"):
        make_settings("sqlite:///x.db", cache={"url": "memcached://x"})
    with pytest.raises(ConfigError, match="cache.ttl_jitter"):
        make_settings("sqlite:///x.db", cache={"ttl_jitter": 2})
    with pytest.raises(ConfigError, match="cache.colour"):
        make_settings("sqlite:///x.db", cache={"colour": "red"})


# -- Redis unreachable ---------------------------------------------------------------------


@pytest.fixture
def pg_runtime(pg_database: Callable[[], str], make_settings: Callable[..., Any]) -> Iterator[Any]:
    """A runtime on PostgreSQL with the test projections, whose cache is unreachable."""
    settings = make_settings(
        pg_database(),
        projections=["tests.projection_fixtures"],
        cache={"url": dead_redis_url(), "key_prefix": fresh_prefix(), "retry_after": "50ms"},
    )
    runtime = build_runtime(settings)
    yield runtime
    runtime.close()


def _totals_row(engine: sa.Engine, account: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(account_totals).where(account_totals.c.account == account))
        found = row.first()
    return None if found is None else dict(found._mapping)


def test_redis_down_queries_answer_from_the_read_model(pg_runtime: Any) -> None:
    hooks = RecordingHooks()
    cache = pg_runtime.cache
    cache.hooks = hooks
    append(pg_runtime.log, "bank", [("account", "a1", "Deposited", {"amount": 5, "seq": 1})])
    with capture_logs() as logs:
        # the batch commits; its invalidation cannot be done and stays journaled
        assert pg_runtime.engine.catch_up(["totals"]) == 1
        engine = pg_runtime.log.engine
        for _ in range(20):
            row = cache.get_or_load(
                "totals", "a1", ["account:a1"], lambda: _totals_row(engine, "a1")
            )
            assert row is not None and row["total"] == 5
    assert len(hooks.fallbacks) == 20
    assert all(p == "totals" for p, _ in hooks.fallbacks)
    assert isinstance(hooks.fallbacks[0][1], redis.ConnectionError)
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert any("reading from the read model" in e["event"] for e in warnings)
    assert any("sweeper will redo" in e["event"] for e in warnings)
    fallback_warnings = [e for e in warnings if "reading from the read model" in e["event"]]
    assert len(fallback_warnings) == 1  # rate-limited, not one per read
    with pytest.raises(CacheError, match="totals"):
        cache.invalidate("totals", ["account:a1"])
    assert len(pg_runtime.engine.store_of("totals").pending_invalidations()) == 1


def test_invalidations_journaled_while_redis_was_down_are_redone(pg_runtime: Any) -> None:
    append(pg_runtime.log, "bank", [("account", "a1", "Deposited", {"amount": 5, "seq": 1})])
    with redis_prefix() as prefix:
        live = _wait_live(RedisCache(REDIS_URL, key_prefix=prefix))
        try:
            engine = pg_runtime.log.engine
            stale = live.get_or_load(
                "totals", "a1", ["account:a1"], lambda: _totals_row(engine, "a1")
            )
            assert stale is None  # cached before the event was applied
            # Redis unreachable: the invalidation is journaled
            pg_runtime.engine.catch_up(["totals"])
            store = pg_runtime.engine.store_of("totals")
            assert [i.tags for i in store.pending_invalidations()] == [("account:a1",)]
            assert live.get_or_load("totals", "a1", ["account:a1"], lambda: "unused") is None
            pg_runtime.engine.cache.close()
            pg_runtime.engine.cache = live  # Redis is back
            assert pg_runtime.engine.redo_invalidations() == 1
            assert store.pending_invalidations() == []
            row = live.get_or_load(
                "totals", "a1", ["account:a1"], lambda: _totals_row(engine, "a1")
            )
            assert row is not None and row["total"] == 5
        finally:
            pg_runtime.engine.cache = None
            live.close()


def test_retrying_a_parked_event_invalidates_its_entries(
    pg_database: Callable[[], str],
    make_settings: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with redis_prefix() as prefix:
        settings = make_settings(
            pg_database(),
            projections=["tests.projection_fixtures"],
            engine={"max_attempts": 1},
            cache={"url": REDIS_URL, "key_prefix": prefix},
        )
        runtime = build_runtime(settings)
        try:
            engine = runtime.log.engine
            monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "a1")
            append(runtime.log, "bank", [("account", "a1", "Deposited", {"amount": 5, "seq": 1})])
            runtime.engine.catch_up(["totals"])
            [parked] = runtime.engine.parked("totals")

            def read() -> Any:
                load = lambda: _totals_row(engine, "a1")  # noqa: E731
                return runtime.cache.get_or_load("totals", "a1", ["account:a1"], load)

            assert read() is None  # cached: the event is parked
            monkeypatch.delenv("READMODEL_TEST_FAIL_ON")
            assert runtime.engine.retry(parked) == 1
            assert read()["total"] == 5
            assert runtime.engine.store_of("totals").pending_invalidations() == []
        finally:
            runtime.close()


def test_redis_killed_and_restarted_never_serves_a_stale_value(
    private_redis: Any, pg_database: Callable[[], str], make_settings: Callable[..., Any]
) -> None:
    """SIGKILL the cache's Redis between two applies: reads come from the read model (never
    the value cached before), the invalidation waits in the journal, and once Redis is back
    the journal is redone and reads are cached again."""
    server = private_redis()
    settings = make_settings(
        pg_database(),
        projections=["tests.projection_fixtures"],
        cache={"url": private_redis.url, "key_prefix": fresh_prefix(), "retry_after": "50ms"},
    )
    runtime = build_runtime(settings)
    try:
        cache, engine = runtime.cache, runtime.log.engine
        hooks = cache.hooks = RecordingHooks()

        def total() -> int:
            row = cache.get_or_load(
                "totals", "a1", ["account:a1"], lambda: _totals_row(engine, "a1")
            )
            return row["total"]

        append(runtime.log, "bank", [("account", "a1", "Deposited", {"amount": 5, "seq": 1})])
        runtime.engine.catch_up(["totals"])
        assert [total(), total()] == [5, 5]
        assert hooks.misses >= 1 and hooks.hits >= 1

        server.kill()
        server.wait()
        append(runtime.log, "bank", [("account", "a1", "Deposited", {"amount": 7, "seq": 2})])
        runtime.engine.catch_up(["totals"])
        store = runtime.engine.store_of("totals")
        assert [i.tags for i in store.pending_invalidations()] == [("account:a1",)]
        assert [total() for _ in range(5)] == [12] * 5
        assert hooks.fallbacks

        private_redis()  # back, empty (it keeps nothing on disk)
        assert runtime.engine.redo_invalidations() == 1
        assert store.pending_invalidations() == []
        hits = hooks.hits
        assert [total() for _ in range(3)] == [12] * 3
        assert hooks.hits > hits
    finally:
        runtime.close()


def test_a_value_loaded_before_redis_lost_its_data_is_not_stored_after(
    private_redis: Any,
) -> None:
    """A load that began before Redis restarted (empty) and ended after another read had
    started the invalidation counter again was stored: its snapshot was older than the new
    counter and the versions that would have refused it were gone. Stale for a whole TTL."""
    server = private_redis()
    prefix = fresh_prefix()
    cache = RedisCache(private_redis.url, key_prefix=prefix, near_cache_size=0)
    other = RedisCache(private_redis.url, key_prefix=prefix, near_cache_size=0)
    try:
        loads: list[str] = []

        def load() -> str:
            if not loads:
                other.invalidate("totals", ["account:a1"])  # the row changed meanwhile...
                server.kill()
                server.wait()
                private_redis()  # ...and Redis came back empty
                assert other.get_or_load("totals", "a2", ["account:a2"], lambda: "x") == "x"
            loads.append("loaded")
            return "old" if len(loads) == 1 else "new"

        assert cache.get_or_load("totals", "a1", ["account:a1"], load) == "old"
        assert cache.get_or_load("totals", "a1", ["account:a1"], load) == "new"
        assert cache.get_or_load("totals", "a1", ["account:a1"], load) == "new"
        assert len(loads) == 2
    finally:
        cache.close()
        other.close()


def test_the_near_caches_resp3_reader_resumes_a_message_cut_anywhere() -> None:
    """A BCAST invalidation push can hold every key a wipe touched: the reader keeps what it
    parsed of it instead of parsing it again from its start at each chunk (seconds of
    stale copies for a 100,000-key wipe). Fed in 7-byte chunks, it reads what Redis sent."""

    from projections.resp3_reader import _Incomplete, _Parser, _Push

    keys = [f"rmtest:e:catalog:product:{n}".encode() for n in range(3000)]
    push = b">2\r\n$10\r\ninvalidate\r\n*%d\r\n" % len(keys)
    push += b"".join(b"$%d\r\n%s\r\n" % (len(key), key) for key in keys)
    data = b"+OK\r\n%1\r\n+proto\r\n:3\r\n*0\r\n|1\r\n+ttl\r\n:5\r\n$-1\r\n" + push + b":7\r\n"
    parser, messages = _Parser(), []
    middle = data.index(push) + len(push) // 2
    for start in range(0, len(data), 7):
        parser.buffer += data[start : start + 7]
        while True:
            try:
                messages.append(parser.next())
            except _Incomplete:
                break
        if start <= middle < start + 7:  # half of the push read: half of its keys kept
            assert 1400 < len(parser.stack[-1][2]) < 1600
    assert messages[:4] == [b"OK", [b"proto", 3], [], None]  # the attribute is skipped
    assert isinstance(messages[4], _Push) and messages[4].items == [b"invalidate", keys]
    assert messages[5:] == [7] and parser.buffer == bytearray()
