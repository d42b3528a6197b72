"""Helpers of the cache tests: a Redis key prefix per test, events appended to the log, a
redis-server of a test's own."""

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
    calling the fixture (re)starts it on the same port."""
    url = dead_redis_url()
    port = url.rsplit(":", 1)[1].split("/")[0]
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        command = ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(tmp_path)]
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
