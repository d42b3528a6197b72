"""A handler past ``engine.handler_timeout`` is seen in ``readmodel metrics``, not only in
the worker's logs: ``readmodel_handler_timeouts_total{projection}`` counts the handlers that
passed the bound, and ``readmodel_handlers_overdue{projection}`` the ones running past it
now, so a handler blocked where it cannot be interrupted (a socket read without a timeout),
whose lane waits for ever, shows as 1 until its worker is restarted.

A real worker process on a Redis broker, its handler hung through the fixtures' environment
(``READMODEL_TEST_HANG_ON`` / ``READMODEL_TEST_HANG_HOW``), scraped by a real ``readmodel
metrics`` server reading the multiprocess directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from outbox.db import create_engine
from projections.store_tables import parked_events
from tests.broker_helpers import Processes, wait_until
from tests.hung_worker_helpers import start_hung_worker
from tests.metrics_helpers import free_port, scrape

TIMEOUTS = 'readmodel_handler_timeouts_total{projection="totals"}'
OVERDUE = 'readmodel_handlers_overdue{projection="totals"}'


def _pipeline(
    tmp_path: Path,
    store_url: str,
    source_url: str,
    broker: dict[str, Any],
    processes: Processes,
    how: str,
) -> tuple[str, int]:
    """A worker whose handler hangs on acct-1's events (``how``) and a metrics server;
    returns the worker's key and the server's port."""
    metrics = {"dir": str(tmp_path / "metrics")}
    config, key = start_hung_worker(
        tmp_path, store_url, source_url, broker, processes, how, metrics=metrics
    )
    port = free_port()
    processes.start("metrics", "metrics", "--config", str(config), "--port", str(port))
    assert wait_until(lambda: bool(scrape(port)), 30), processes.log_tail()
    return key, port


def _parked(store_url: str) -> int:
    store = create_engine(store_url)
    try:
        with store.connect() as conn:
            query = sa.select(sa.func.count()).select_from(parked_events)
            return int(conn.execute(query).scalar_one())
    finally:
        store.dispose()


def test_timeouts_are_counted_and_an_interrupted_handler_is_no_longer_overdue(
    broker_for: Callable[[str], dict[str, Any]],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    processes: Processes,
    tmp_path: Path,
) -> None:
    """An endless loop in Python: interrupted at each of its 2 attempts, then parked (its
    later event held behind it). Two timeouts counted; none overdue once it is parked."""
    store_url = pg_database()
    key, port = _pipeline(
        tmp_path, store_url, sqlite_database(), broker_for("redis"), processes, "loop"
    )
    assert wait_until(lambda: _parked(store_url) == 2, 120, interval=0.5), processes.log_tail()

    samples = scrape(port)
    assert samples.get(TIMEOUTS) == 2, samples
    assert samples.get(OVERDUE, 0) == 0, samples
    assert processes.stop_all()[key] == 0, processes.log_tail()


def test_a_handler_that_cannot_be_interrupted_shows_as_overdue_until_its_worker_dies(
    broker_for: Callable[[str], dict[str, Any]],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    processes: Processes,
    tmp_path: Path,
) -> None:
    """Blocked reading a socket without a timeout: the bound cannot interrupt it, its lane
    waits. The scrape shows one timeout and one handler overdue; once the worker is killed
    (to restart it), the overdue handler is no longer counted and the timeout still is."""
    store_url = pg_database()
    key, port = _pipeline(
        tmp_path, store_url, sqlite_database(), broker_for("redis"), processes, "socket"
    )

    def overdue() -> bool:
        samples = scrape(port)
        return samples.get(OVERDUE) == 1 and samples.get(TIMEOUTS) == 1

    assert wait_until(overdue, 60, interval=0.5), (scrape(port), processes.log_tail())
    assert _parked(store_url) == 0  # never came back: nothing failed, nothing parked

    processes.kill(key)  # SIGKILL: how a worker with a stuck thread is restarted
    samples = scrape(port)
    assert samples.get(OVERDUE, 0) == 0, samples
    assert samples.get(TIMEOUTS) == 1, samples
