"""``readmodel metrics`` with an event-log store that hangs (accepts connections and never
answers, or stalls on the question which sources the log knows): the exporter starts within
its ``--timeout`` and serves ``readmodel_store_up 0`` with the sources' figures, as it does
for a store that refuses connections at start. Before, it checked the stores' schema
revision and the projections' sources at start with no time limit: it never served. A check
that answers after the start still stops the server on what it finds (exit 2).

Scrapes during the hang reuse the reads still going from earlier scrapes: 20 scrapes leave
the exporter's threads and its connections to the store where one left them. Before, every
scrape left another thread (and connection) per hung read (the store's figures, each store's
projections), without bound.

Each test runs a real ``readmodel metrics`` process, scraped over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from config import load_settings
from outbox.db import create_engine
from tests.broker_helpers import wait_until
from tests.cli_helpers import run_cli, write_config
from tests.latency_proxy_helpers import slow_database
from tests.metrics_helpers import free_port, scrape, start_metrics, stop_metrics
from tests.outbox_helpers import init_outbox, insert_events
from tests.stall_proxy_helpers import stall_proxy

SECRET = "S3cret-Metrics-4711"
USER = "metrics_u"
TIMEOUT = 1.0
UP = 'readmodel_store_up{store="default"}'


def _config(tmp_path: Path, store: str, source: str, url: str) -> Path:
    """``totals`` (reading ``bank``) in ``store``; ``source`` at ``url`` with 3 undelivered
    outbox rows."""
    path = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": store},
            "sources": {source: {"url": url}},
        },
    )
    settings = load_settings(path).sources[source]
    init_outbox(settings, source)
    engine = create_engine(settings.url)
    try:
        insert_events(
            engine,
            [("account", f"acct-{i}", "Deposited", {"amount": 1, "seq": 1}) for i in range(3)],
        )
    finally:
        engine.dispose()
    return path


def _served(port: int, process: Any, within: float) -> dict[str, float]:
    """The first scrape that has the store's figure, within ``within`` seconds of now."""
    started = time.monotonic()
    found: dict[str, float] = {}

    def up() -> bool:
        found.update(scrape(port))
        return UP in found or process.poll() is not None

    assert wait_until(up, within + 30), "never served"
    assert process.poll() is None, stop_metrics(process)
    assert time.monotonic() - started < within, time.monotonic() - started
    return found


def _threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def test_metrics_start_and_serve_while_the_log_store_hangs(
    tmp_path: Path, sqlite_database: Callable[[], str], silent_port: int
) -> None:
    store = f"postgresql://{USER}:{SECRET}@127.0.0.1:{silent_port}/readmodel"
    config = _config(tmp_path, store, "bank", sqlite_database())
    port = free_port()
    process = start_metrics(config, port, "--timeout", str(TIMEOUT))
    try:
        samples = _served(port, process, 15)
        assert samples[UP] == 0
        assert samples['readmodel_source_up{source="bank"}'] == 1
        assert samples['readmodel_outbox_undelivered{source="bank"}'] == 3
    finally:
        stderr = stop_metrics(process)
    assert process.returncode == 0, stderr
    assert f"no answer within {TIMEOUT:g}s" in stderr, stderr
    assert SECRET not in stderr and USER not in stderr, stderr


def test_metrics_start_while_the_log_hangs_on_which_sources_it_knows(
    tmp_path: Path, sqlite_database: Callable[[], str], pg_database: Callable[[], str]
) -> None:
    """``totals`` reads ``bank``, which the config does not list: the log is asked whether
    it has events of it, and stalls on that question (and on every read of its heads)."""
    store = pg_database()
    config = _config(tmp_path, store, "shop", sqlite_database())
    migrated = run_cli(["migrate", "--config", str(config)])
    assert migrated.exit_code == 0, migrated.output
    with stall_proxy(store, b"rm_log_heads") as proxy:
        stalled = write_config(
            tmp_path / "stalled.toml",
            {
                "projections": ["tests.projection_fixtures:Totals"],
                "store": {"url": proxy.url(store)},
                "sources": {"shop": {"url": load_settings(config).sources["shop"].url}},
            },
        )
        port = free_port()
        process = start_metrics(stalled, port, "--timeout", str(TIMEOUT))
        try:
            samples = _served(port, process, 15)
            assert samples[UP] == 0
            assert samples['readmodel_outbox_undelivered{source="shop"}'] == 3
            assert proxy.stalled() >= 1
        finally:
            stderr = stop_metrics(process)
    assert process.returncode == 0, stderr
    assert "invalid configuration" not in stderr, stderr


def test_a_source_nothing_feeds_found_after_the_start_stops_the_server(
    tmp_path: Path, sqlite_database: Callable[[], str], pg_database: Callable[[], str]
) -> None:
    """The log, behind a slow link, says only after the start that it has no events of
    ``bank`` (which ``totals`` reads and the config does not list): exit 2 naming it, as
    at a start it answers in time."""
    store = pg_database()
    config = _config(tmp_path, store, "shop", sqlite_database())
    migrated = run_cli(["migrate", "--config", str(config)])
    assert migrated.exit_code == 0, migrated.output
    with slow_database(store, 0.3) as slow:
        late = write_config(
            tmp_path / "slow.toml",
            {
                "projections": ["tests.projection_fixtures:Totals"],
                "store": {"url": slow},
                "sources": {"shop": {"url": load_settings(config).sources["shop"].url}},
            },
        )
        process = start_metrics(late, free_port(), "--timeout", "0.2")
        try:
            assert wait_until(lambda: process.poll() is not None, 60)
        finally:
            stderr = stop_metrics(process)
    assert process.returncode == 2, stderr
    assert "the read store does not answer" in stderr, stderr
    assert "subscribes to source 'bank'" in stderr, stderr


def test_scrapes_during_a_hang_do_not_pile_up_threads(
    tmp_path: Path, sqlite_database: Callable[[], str], silent_port: int
) -> None:
    store = f"postgresql://{USER}:{SECRET}@127.0.0.1:{silent_port}/readmodel"
    config = _config(tmp_path, store, "bank", sqlite_database())
    port = free_port()
    process = start_metrics(config, port, "--timeout", "0.3")
    try:
        _served(port, process, 15)
        assert scrape(port)[UP] == 0
        before = _threads(process.pid)

        for _ in range(20):
            assert scrape(port)[UP] == 0

        # the HTTP server's thread of the last scrape may still be ending
        assert wait_until(lambda: _threads(process.pid) <= before + 2, 5), (
            before,
            _threads(process.pid),
        )
    finally:
        stderr = stop_metrics(process)
    assert process.returncode == 0, stderr


def test_scrapes_during_a_stall_do_not_pile_up_connections(
    tmp_path: Path, sqlite_database: Callable[[], str], pg_database: Callable[[], str]
) -> None:
    """The log's store answers, but stalls on every read of the log's heads: the reads a
    scrape leaves going hold their connections, which the next scrapes wait for."""
    store = pg_database()
    config = _config(tmp_path, store, "bank", sqlite_database())
    migrated = run_cli(["migrate", "--config", str(config)])
    assert migrated.exit_code == 0, migrated.output
    with stall_proxy(store, b"rm_log_heads") as proxy:
        stalled = write_config(
            tmp_path / "stalled.toml",
            {
                "projections": ["tests.projection_fixtures:Totals"],
                "store": {"url": proxy.url(store)},
                "sources": {"bank": {"url": load_settings(config).sources["bank"].url}},
            },
        )
        port = free_port()
        process = start_metrics(stalled, port, "--timeout", "0.3")
        try:
            _served(port, process, 15)
            assert scrape(port)[UP] == 0
            stalls, threads = proxy.stalled(), _threads(process.pid)

            for _ in range(20):
                assert scrape(port)[UP] == 0

            assert proxy.stalled() == stalls >= 1
            assert wait_until(lambda: _threads(process.pid) <= threads + 2, 5), (
                threads,
                _threads(process.pid),
            )
        finally:
            stderr = stop_metrics(process)
    assert process.returncode == 0, stderr
