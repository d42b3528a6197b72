"""Helpers of the cache tests: a Redis key prefix per test (``redis_prefix()``, or the
``redis_key_prefix`` fixture), events appended to the log, a redis-server of a test's own."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from outbox.envelope import aggregate_hash
from outbox.log import EventLog
from outbox.rows import LogRecord
from projections.cache import CacheHooks

REDIS_URL = "redis://127.0.0.1:6379/0"


def fresh_prefix() -> str:
    return f"rmtest:{uuid.uuid4().hex[:12]}:"


def redis_keys(prefix: str) -> list[bytes]:
    """Every key under ``prefix`` (SCAN: tests only, never the cache itself)."""
    with redis.Redis.from_url(REDIS_URL) as client:
        return list(client.scan_iter(match=prefix + "*", count=5000))


def delete_prefix(prefix: str) -> None:
    with redis.Redis.from_url(REDIS_URL) as client:
        batch: list[bytes] = []
        for key in client.scan_iter(match=prefix + "*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)


@contextmanager
def redis_prefix() -> Iterator[str]:
    """A fresh key prefix; every key under it is deleted afterwards."""
    prefix = fresh_prefix()
    try:
        yield prefix
    finally:
        delete_prefix(prefix)


@pytest.fixture
def redis_key_prefix() -> Iterator[str]:
    """``redis_prefix()`` as a fixture: a fresh key prefix for this test, emptied after."""
    with redis_prefix() as prefix:
        yield prefix


@contextmanager
def cached_runtime(
    store_url: str, make_settings: Callable[..., Any], projections: str
) -> Iterator[tuple[Any, Any]]:
    """A runtime of ``projections`` (a module) on ``store_url`` caching in Redis under a
    fresh prefix, and its :class:`Queries`; closed and the prefix emptied after."""
    from projections import Queries
    from workers.runtime import build_runtime

    with redis_prefix() as prefix:
        settings = make_settings(
            store_url,
            projections=[projections],
            cache={"url": REDIS_URL, "key_prefix": prefix, "connect_timeout": "5s"},
        )
        runtime = build_runtime(settings)
        try:
            yield runtime, Queries.from_engine(runtime.engine, runtime.log.engine)
        finally:
            runtime.close()


# ARGV: prefix, projection, first, last, ttl ms, JSON, tags -> entries written
_FILL = """
local p, proj = ARGV[1], ARGV[2]
local first, last = tonumber(ARGV[3]), tonumber(ARGV[4])
local ttl, tags = tonumber(ARGV[5]), tonumber(ARGV[7])
local t = redis.call('TIME')
local expires = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ttl
local value = string.format('%d', expires) .. '|' .. ARGV[6]
local all = p .. 'a:' .. proj
for i = first, last do
  local key = 'k' .. i
  redis.call('SET', p .. 'e:' .. proj .. ':' .. key, value, 'PX', ttl)
  redis.call('ZADD', all, expires, key)
  if tags > 0 then redis.call('ZADD', p .. 't:' .. proj .. ':item:' .. (i % tags), expires, key) end
end
redis.call('PEXPIRE', all, ttl)
for i = 0, tags - 1 do redis.call('PEXPIRE', p .. 't:' .. proj .. ':item:' .. i, ttl) end
return last - first + 1
"""


def fill_entries(
    prefix: str,
    projection: str,
    count: int,
    value: Any,
    *,
    ttl_ms: int = 120_000,
    tags: int = 100,
    url: str = REDIS_URL,
) -> list[str]:
    """Write ``count`` entries ``k0``..``k<count-1>`` of ``projection`` holding ``value``,
    laid out as RedisCache's store script lays them out (entry, ``a:`` set, tag sets
    ``item:<i % tags>``), 1,000 per server-side script (a few ms of the shared Redis
    each): 200,000 in seconds, where one store script per entry takes three times as
    long. Returns the keys."""
    blob = json.dumps(value)
    with redis.Redis.from_url(url) as client:
        fill = client.register_script(_FILL)
        for first in range(0, count, 1_000):
            last = min(count, first + 1_000) - 1
            fill(args=[prefix, projection, first, last, ttl_ms, blob, tags])
    return [f"k{i}" for i in range(count)]


def dead_redis_url() -> str:
    """A redis:// URL of a local port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def append(log: EventLog, source: str, events: list[tuple[str, str, str, dict[str, Any]]]) -> int:
    """Append ``(aggregate_type, aggregate_id, event_type, payload)`` events; the new head."""
    records = [
        LogRecord(
            source_position=None,
            event_id=uuid.uuid4().hex,
            tenant=None,
            aggregate_type=agg_type,
            aggregate_id=agg_id,
            key_hash=aggregate_hash(agg_type, agg_id),
            event_type=event_type,
            payload=json.dumps(payload),
            headers=None,
            occurred_at=None,
        )
        for agg_type, agg_id, event_type, payload in events
    ]
    return log.append(source, records).head


class RecordingHooks(CacheHooks):
    """Counts what the cache reports."""

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.invalidations: list[tuple[str, int]] = []
        self.fallbacks: list[tuple[str, BaseException]] = []

    def hit(self, projection: str) -> None:
        self.hits += 1

    def miss(self, projection: str) -> None:
        self.misses += 1

    def invalidated(self, projection: str, tags: int) -> None:
        self.invalidations.append((projection, tags))

    def fallback(self, projection: str, error: BaseException) -> None:
        self.fallbacks.append((projection, error))


@pytest.fixture
def private_redis(tmp_path: Any) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """A redis-server of this test's own on a free port (the shared one is never stopped);
    calling the fixture (re)starts it on the same port, keeping its data across restarts
    (an append-only file in the test's directory) with ``durable=True``."""
    url = dead_redis_url()
    port = url.rsplit(":", 1)[1].split("/")[0]
    started: list[subprocess.Popen[bytes]] = []

    def start(*, durable: bool = False) -> subprocess.Popen[bytes]:
        command = ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "yes" if durable else "no", "--dir", str(tmp_path)]
        command += ["--appendfsync", "always"] if durable else []
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        started.append(process)
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis.from_url(url) as client:
                    client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "the private redis-server did not start"
                time.sleep(0.05)
        return process

    start.url = url  # type: ignore[attr-defined]
    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def near_cache_live(cache: Any) -> Any:
    """``cache`` (a RedisCache) with its near cache, if it has one, started and listening."""
    if cache.near is not None:
        cache.near.start()
        deadline = time.monotonic() + 5
        while not cache.near.live and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cache.near.live
    return cache


def read_totals(cache: Any, row: dict[str, str], key: str = "a1") -> Any:
    """``cache``'s entry of ``key`` in projection ``totals`` (tag ``account:KEY``), loaded as
    a copy of ``row`` on a miss."""
    return cache.get_or_load("totals", key, [f"account:{key}"], lambda: dict(row))
