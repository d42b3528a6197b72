"""The near cache's listener outlives whatever ends its connection: a push it cannot read or
a failure of its own is logged, the local copies are dropped, and it tracks again, so the
near cache is on and an invalidation made after the failure still reaches it."""

from __future__ import annotations

import itertools
import time
from typing import Any

import redis
from structlog.testing import capture_logs

from projections.near_cache import NearCache
from projections.redis_cache import RedisCache
from tests.cache_helpers import REDIS_URL, near_cache_live, redis_prefix

_TAGS = ["product:1"]


def _near_copy(reader: RedisCache, values: Any) -> Any:
    """Read ``p1`` until the reader keeps a near copy of it (the push of the store that
    filled Redis may cancel a first copy); the value read."""
    assert reader.near is not None
    for _ in range(100):
        value = reader.get_or_load("catalog", "p1", _TAGS, lambda: next(values))
        if len(reader.near) == 1:
            return value
        time.sleep(0.01)
    raise AssertionError("no near copy kept")


def _wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _invalidation_reaches(reader: RedisCache, writer: RedisCache) -> None:
    """A near copy, then an invalidation by another process: the next read is fresh."""
    first = _near_copy(reader, itertools.count(100))
    assert reader.get_or_load("catalog", "p1", _TAGS, lambda: -1) == first  # served near
    writer.invalidate("catalog", _TAGS)
    reader.sync()
    assert reader.get_or_load("catalog", "p1", _TAGS, lambda: "fresh") == "fresh"


def test_a_pushed_key_that_is_not_utf8_does_not_stop_the_listener() -> None:
    """A key under the entries' prefix that is not UTF-8 (written by anyone with access to
    the Redis) is pushed like any other; decoding it ended the listener thread."""
    with redis_prefix() as prefix:
        reader = near_cache_live(RedisCache(REDIS_URL, key_prefix=prefix))
        writer = RedisCache(REDIS_URL, key_prefix=prefix, near_cache_size=0)
        try:
            assert reader.near is not None
            _near_copy(reader, itertools.count())
            with redis.Redis.from_url(REDIS_URL) as client:
                client.set(prefix.encode() + b"e:\xff\xfe", b"x", px=60_000)
            reader.sync()
            _wait_until(lambda: reader.near is not None and reader.near.live, "near cache off")
            _invalidation_reaches(reader, writer)
            assert reader.near._thread.is_alive()
        finally:
            reader.close()
            writer.close()


class _FailsOnce(NearCache):
    """A near cache whose listener fails once, unexpectedly, on the next push of ``trigger``
    once ``armed``."""

    trigger = ""
    armed = False
    failures = 0

    def _invalidate(self, keys: list[str] | None) -> None:
        if self.armed and keys and self.trigger in keys and not self.failures:
            self.failures += 1
            raise RuntimeError("a failure of the listener's own")
        super()._invalidate(keys)


def test_the_listener_reconnects_after_a_failure_of_its_own(private_redis: Any) -> None:
    private_redis()
    password = "near-listener-secret"
    with redis.Redis.from_url(private_redis.url) as client:
        client.config_set("requirepass", password)
    url = private_redis.url.replace("redis://", f"redis://:{password}@")
    prefix = "rmtest:near:"
    reader = RedisCache(url, key_prefix=prefix, near_cache_size=0)
    writer = RedisCache(url, key_prefix=prefix, near_cache_size=0)
    near = _FailsOnce(
        host="127.0.0.1",
        port=int(private_redis.url.rsplit(":", 1)[1].split("/")[0]),
        prefix=f"{prefix}e:",
        size=100,
        password=password,
        timeout=1.0,
    )
    near.trigger = f"{prefix}e:catalog:p1"
    reader.near = near
    try:
        near_cache_live(reader)
        with capture_logs() as logs:
            _near_copy(reader, itertools.count())
            near.armed = True
            writer.invalidate("catalog", _TAGS)  # its push makes the listener fail
            _wait_until(lambda: near.failures == 1 and not len(near), "no failure, or copies kept")
            assert reader.get_or_load("catalog", "p1", _TAGS, lambda: "reloaded") == "reloaded"
            _wait_until(lambda: near.live, "the near cache stayed off after the failure")
        _invalidation_reaches(reader, writer)
        warnings = [e for e in logs if e["log_level"] in ("warning", "error")]
        assert [e["event"] for e in warnings] == [
            "near cache: listener failed; local copies dropped, reconnecting"
        ]
        assert warnings[0]["error"] == "RuntimeError: a failure of the listener's own"
        assert password not in repr(logs)
    finally:
        reader.close()
        writer.close()
