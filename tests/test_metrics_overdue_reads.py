"""A metrics scrape reads from the broker's Redis what it exports (the queue's depth), not
the board of handlers past ``engine.handler_timeout`` (``workers/overdue_board.py``): the
exporter's overdue gauge comes from the workers' multiprocess files, so that read, made
through the ``collect()`` shared with ``status``, was wasted at every scrape. ``status``
still reads the board (its overdue columns, ``health --max-overdue``)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from config import load_settings
from tests.broker_helpers import REDIS_URL
from tests.cli_helpers import run_cli, write_config
from tests.metrics_helpers import collected
from workers.overdue_board import board_key
from workers.runtime import build_runtime
from workers.status import collect


@contextmanager
def redis_commands(namespace: str) -> Iterator[list[str]]:
    """The commands the shared Redis runs that name ``namespace`` while the block runs
    (``MONITOR``; other sessions' commands are left out), complete once it ends."""
    seen: list[str] = []
    marker = f"{namespace}:monitor-end:{uuid.uuid4().hex}"
    started = threading.Event()
    client = redis.Redis.from_url(REDIS_URL)

    def watch() -> None:
        with client.monitor() as monitor:
            started.set()
            for command in monitor.listen():
                text = str(command["command"])
                if marker in text:
                    return
                if namespace in text:
                    seen.append(text)

    thread = threading.Thread(target=watch, daemon=True, name="redis-monitor")
    thread.start()
    assert started.wait(5)
    other = redis.Redis.from_url(REDIS_URL)
    try:
        other.echo(f"{namespace}:monitor-start")
        yield seen
    finally:
        other.echo(marker)  # the monitor's last command: every earlier one is in ``seen``
        thread.join(10)
        other.close()
        client.close()
    assert not thread.is_alive()


def _config(tmp_path: Path, broker_for: Callable[[str], dict[str, Any]]) -> tuple[Path, str]:
    broker = broker_for("redis")
    config = write_config(
        tmp_path / "rm.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": f"sqlite:///{tmp_path}/store.db"},
            "sources": {"bank": {"url": f"sqlite:///{tmp_path}/bank.db"}},
            "broker": broker,
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    assert run_cli(["outbox", "init", "--source", "bank", "--config", str(config)]).exit_code == 0
    return config, broker["namespace"]


def test_a_scrape_does_not_read_the_overdue_board(
    tmp_path: Path, broker_for: Callable[[str], dict[str, Any]]
) -> None:
    config, namespace = _config(tmp_path, broker_for)

    with redis_commands(namespace) as commands:
        families = collected(config)

    names = {family.name for family in families}
    assert "readmodel_broker_queue_messages" in names, names
    assert commands, "the scrape read the queue's depth from Redis"  # the monitor saw it
    board = board_key(namespace)
    assert not [c for c in commands if board in c], commands


def test_status_still_reads_the_overdue_board(
    tmp_path: Path, broker_for: Callable[[str], dict[str, Any]]
) -> None:
    config, namespace = _config(tmp_path, broker_for)
    runtime = build_runtime(load_settings(config), create_tables=False, migrate=False)
    try:
        with redis_commands(namespace) as commands:
            report = collect(runtime, timeout=10)
    finally:
        runtime.close()

    assert [c for c in commands if board_key(namespace) in c], commands
    (totals,) = report.projections
    assert totals.handlers_overdue == 0
