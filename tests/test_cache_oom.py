"""A cache Redis that reached its ``maxmemory`` under ``noeviction`` (the policy the README
asks for) refuses every write: stores fail, reads fall back to the read model, and an
invalidation must still delete its entries, or they are served stale until their TTL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from projections.redis_cache import RedisCache
from tests.cache_helpers import fresh_prefix, near_cache_live, read_totals


def _fill_to_maxmemory(url: str) -> None:
    """Put the Redis past its ``maxmemory`` (as another application's data, or a lowered
    limit, would) so that it refuses every write that may need memory, as ``noeviction``
    does until something is deleted."""
    with redis.Redis.from_url(url) as admin:
        assert admin.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) // 2)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            admin.set("other-app:1", "x")


@pytest.fixture(params=[0, 1000], ids=["no-near", "near"])
def full_cache(
    request: pytest.FixtureRequest, private_redis: Any
) -> Iterator[Callable[[], RedisCache]]:
    """A RedisCache on a private Redis (the shared one is never filled up)."""
    private_redis()
    made: list[RedisCache] = []

    def make() -> RedisCache:
        cache = RedisCache(
            private_redis.url, key_prefix=fresh_prefix(), near_cache_size=request.param
        )
        made.append(cache)
        return near_cache_live(cache)

    make.url = private_redis.url  # type: ignore[attr-defined]
    yield make
    for cache in made:
        cache.close()


def test_an_invalidation_deletes_its_entries_when_redis_is_out_of_memory(
    full_cache: Any,
) -> None:
    cache = full_cache()
    row = {"total": "5"}
    assert [read_totals(cache, row), read_totals(cache, row)] == [{"total": "5"}] * 2  # cached
    _fill_to_maxmemory(full_cache.url)
    row["total"] = "12"  # a batch changes the read model, then invalidates
    cache.invalidate("totals", ["account:a1"])
    assert [read_totals(cache, row) for _ in range(3)] == [{"total": "12"}] * 3


def test_a_whole_projection_wipe_works_when_redis_is_out_of_memory(full_cache: Any) -> None:
    cache = full_cache()
    rows = {key: {"total": "5"} for key in ("a1", "a2")}
    for key, row in rows.items():
        assert read_totals(cache, row, key) == {"total": "5"}
    _fill_to_maxmemory(full_cache.url)
    for row in rows.values():
        row["total"] = "12"  # a replay swapped the projection's tables
    cache.invalidate_projection("totals")
    assert [read_totals(cache, row, key) for key, row in rows.items()] == [{"total": "12"}] * 2


def test_out_of_memory_invalidations_write_one_stamp_and_still_refuse_older_loads(
    full_cache: Any,
) -> None:
    """Past its maxmemory, an invalidation of many tags writes one stamp for the projection,
    not a version per tag; a load begun before it is still refused once memory is back."""
    cache = full_cache()
    row = {"total": "5"}
    loading: list[str] = []

    def load() -> dict[str, str]:
        if not loading:  # the read model changes while this load runs, Redis being full
            loading.append("once")
            _fill_to_maxmemory(full_cache.url)
            row["total"] = "12"
            cache.invalidate("totals", ["account:a1", *(f"account:x{n}" for n in range(500))])
            with redis.Redis.from_url(full_cache.url) as admin:
                admin.config_set("maxmemory", 0)  # memory is back
            return {"total": "5"}
        return dict(row)

    assert cache.get_or_load("totals", "a1", ["account:a1"], load) == {"total": "5"}
    assert [read_totals(cache, row) for _ in range(2)] == [{"total": "12"}] * 2
    with redis.Redis.from_url(full_cache.url) as admin:
        versions = [f"{cache.prefix}v:totals:account:x{n}" for n in range(500)]
        assert admin.exists(*versions) == 0
