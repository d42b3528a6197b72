"""A handler past ``engine.handler_timeout`` that cannot be interrupted (a socket read without
a timeout) holds its lane: ``readmodel status`` shows it per projection (``handlers_overdue``
and ``oldest_overdue_seconds`` in ``--json``, an ``overdue`` column in the table), read from
the broker's Redis where each worker records its overdue handlers, so a status in another
process, or on another machine, sees it; ``readmodel health`` fails past
``health.max_overdue`` / ``--max-overdue``, naming the projection. A worker killed with its
stuck handler stops counting once its record goes stale.

Real worker processes on a Redis broker, their handler hung through the fixtures'
environment (``READMODEL_TEST_HANG_ON`` / ``READMODEL_TEST_HANG_HOW``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from config import ConfigError, load_settings
from tests.broker_helpers import Processes, wait_until
from tests.cli_helpers import run_cli, write_config
from tests.hung_worker_helpers import start_hung_worker
from tests.outbox_helpers import init_outbox


def _totals(config: Path) -> dict[str, Any]:
    result = run_cli(["status", "--json", "--config", str(config)])
    document = json.loads(result.stdout)
    assert document["version"] == 2  # fields added only
    (totals,) = document["projections"]
    return dict(totals)


def test_a_handler_that_cannot_be_interrupted_shows_in_status_and_fails_health(
    broker_for: Callable[[str], dict[str, Any]],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    processes: Processes,
    tmp_path: Path,
) -> None:
    store_url = pg_database()
    config, key = start_hung_worker(
        tmp_path,
        store_url,
        sqlite_database(),
        broker_for("redis"),
        processes,
        "socket",
        health={"max_overdue": 0},
    )

    assert wait_until(lambda: _totals(config)["handlers_overdue"] == 1, 60, interval=0.5), (
        _totals(config),
        processes.log_tail(),
    )
    first = _totals(config)["oldest_overdue_seconds"]
    assert wait_until(lambda: _totals(config)["oldest_overdue_seconds"] > first + 1, 10)

    table = run_cli(["status", "--config", str(config)], env={"COLUMNS": "80"}).stdout
    assert "handlers past engine.handler_timeout" in table, table
    (row,) = [line for line in table.split("handler_timeout")[1].splitlines() if "totals" in line]
    assert [cell.strip() for cell in row.split("│")[1:3]] == ["totals", "1"], table

    failing = run_cli(["health", "--config", str(config)])
    assert failing.exit_code == 1, failing.output
    assert "unhealthy: projection totals: 1 handler past engine.handler_timeout" in failing.stderr
    assert "(bound 0)" in failing.stderr
    within = run_cli(["health", "--config", str(config), "--max-overdue", "1", "--json"])
    assert within.exit_code == 0, within.output
    document = json.loads(within.stdout)
    assert (document["healthy"], document["max_overdue"]) == (True, 1)

    processes.kill(key)  # SIGKILL: how a worker with a stuck thread is restarted
    assert wait_until(lambda: _totals(config)["handlers_overdue"] == 0, 40, interval=1), _totals(
        config
    )
    assert _totals(config)["oldest_overdue_seconds"] is None
    assert run_cli(["health", "--config", str(config)]).exit_code == 0


def test_an_interrupted_handler_is_no_longer_overdue(
    broker_for: Callable[[str], dict[str, Any]],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    processes: Processes,
    tmp_path: Path,
) -> None:
    """An endless loop in Python: interrupted at each attempt, then parked; once parked no
    handler is overdue, and none is left recorded."""
    config, key = start_hung_worker(
        tmp_path, pg_database(), sqlite_database(), broker_for("redis"), processes, "loop"
    )

    def parked() -> bool:
        return _totals(config)["parked"] == 2

    assert wait_until(parked, 120, interval=0.5), processes.log_tail()
    totals = _totals(config)
    assert (totals["handlers_overdue"], totals["oldest_overdue_seconds"]) == (0, None)
    assert run_cli(["health", "--config", str(config), "--max-overdue", "0"]).exit_code == 0
    assert processes.stop_all()[key] == 0, processes.log_tail()


def test_without_a_redis_broker_overdue_handlers_are_not_known(
    tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    """Only workers on a Redis broker record them: ``null`` in status, and a bound set for
    ``health`` is a problem, not silently passed."""
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": sqlite_database()},
            "sources": {"bank": {"url": sqlite_database()}},
        },
    )
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0

    totals = _totals(config)
    assert (totals["handlers_overdue"], totals["oldest_overdue_seconds"]) == (None, None)
    assert run_cli(["health", "--config", str(config)]).exit_code == 0
    bounded = run_cli(["health", "--config", str(config), "--max-overdue", "0"])
    assert bounded.exit_code == 1, bounded.output
    assert "handlers past engine.handler_timeout are not known" in bounded.stderr


def test_max_overdue_is_read_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "rm.toml"
    path.write_text("[health]\nmax_overdue = 2\n", encoding="utf-8")
    assert load_settings(path).health.max_overdue == 2

    path.write_text("[health]\nmax_overdue = -1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "health.max_overdue" in str(caught.value)
