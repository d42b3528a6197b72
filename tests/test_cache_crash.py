"""An invalidation lost to a crash is redone: a worker SIGKILLed between the commit of a
batch and telling Redis leaves its journal row (rm_invalidations) and a stale entry; a
worker starting, or the sweeper, invalidates the entry and deletes the row."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from config import load_settings
from projections.redis_cache import RedisCache
from tests.cache_helpers import REDIS_URL, append, redis_prefix
from tests.cli_helpers import write_config
from tests.projection_fixtures import account_totals
from workers.broker import make_broker
from workers.runtime import Runtime, build_runtime
from workers.worker import run_worker

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def config(pg_database: Callable[[], str], tmp_path: Path) -> Iterator[Path]:
    with redis_prefix() as prefix:
        yield write_config(
            tmp_path / "readmodel.toml",
            {
                "store": {"url": pg_database()},
                "projections": ["tests.projection_fixtures"],
                "engine": {"sweep_every": "200ms"},
                "cache": {"url": REDIS_URL, "key_prefix": prefix, "redo_after": "300ms"},
            },
        )


def _read(cache: RedisCache, runtime: Runtime) -> int:
    def load() -> Any:
        with runtime.log.engine.connect() as conn:
            row = conn.execute(account_totals.select().where(account_totals.c.account == "a1"))
            return dict(row.one()._mapping)

    return int(cache.get_or_load("totals", "a1", ["account:a1"], load)["events"])


def _crash_after_commit(config: Path, runtime: Runtime, reader: RedisCache) -> None:
    """One event applied and cached; a second one applied by a worker that dies before
    telling the cache."""
    append(runtime.log, "bank", [("account", "a1", "Deposited", {"amount": 1, "seq": 1})])
    runtime.engine.catch_up()
    assert _read(reader, runtime) == 1
    append(runtime.log, "bank", [("account", "a1", "Deposited", {"amount": 1, "seq": 2})])
    done = subprocess.run(
        [sys.executable, "-m", "tests.cache_crash_worker", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    store = runtime.engine.store_of("totals")
    assert [i.tags for i in store.pending_invalidations()] == [("account:a1",)]
    with runtime.log.engine.connect() as conn:  # the batch did commit ...
        events = conn.execute(account_totals.select()).one()._mapping["events"]
    assert events == 2
    reader.sync()
    assert _read(reader, runtime) == 1  # ... and Redis was never told: stale


def test_a_starting_worker_redoes_the_lost_invalidation(config: Path) -> None:
    settings = load_settings(config)
    runtime = build_runtime(settings)
    reader = RedisCache(REDIS_URL, key_prefix=settings.cache.key_prefix)
    try:
        _crash_after_commit(config, runtime, reader)
        restarted = build_runtime(settings, migrate=False)
        broker = make_broker(settings.broker)
        stop = threading.Event()
        stop.set()  # start, do what a start does, stop
        try:
            run_worker(restarted, broker, stop, threads=1)
        finally:
            broker.close()
            restarted.close()
        assert runtime.engine.store_of("totals").pending_invalidations() == []
        reader.sync()
        assert _read(reader, runtime) == 2
    finally:
        reader.close()
        runtime.close()


def test_the_sweeper_redoes_the_lost_invalidation(config: Path) -> None:
    settings = load_settings(config)
    runtime = build_runtime(settings)
    reader = RedisCache(REDIS_URL, key_prefix=settings.cache.key_prefix)
    try:
        _crash_after_commit(config, runtime, reader)
        sweeper = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "sweeper", "--config", str(config)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            store = runtime.engine.store_of("totals")
            while store.pending_invalidations() and time.monotonic() < deadline:
                assert sweeper.poll() is None, sweeper.communicate()[0]
                time.sleep(0.05)
        finally:
            sweeper.send_signal(signal.SIGTERM)
            output = sweeper.communicate(timeout=30)[0]
        assert store.pending_invalidations() == [], output
        assert "redid journaled cache invalidations" in output
        reader.sync()
        assert _read(reader, runtime) == 2
    finally:
        reader.close()
        runtime.close()
