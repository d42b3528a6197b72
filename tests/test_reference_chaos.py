"""The reference shop on real servers while its pipeline is SIGKILLed.

``readmodel simulate`` writes 5,000 users and 20,000 orders (about 85,000 business
actions: auth on MariaDB, products and orders on PostgreSQL) as a subprocess, while
``readmodel relay`` and two ``readmodel work`` processes (Redis broker, a queue of this
test's own) run the four reference projections. Every few seconds the relay or a worker
is SIGKILLed (by pid) and started again, five times each, while the shop is busy. Afterwards,
once every outbox is drained and every lane has reached the log head, ``readmodel
verify`` must find every read model equal to what the services hold, nothing parked.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.broker_helpers import Processes
from tests.cli_helpers import run_cli, write_config
from tests.reference_helpers import count, pipeline_caught_up

pytestmark = pytest.mark.chaos

USERS, ORDERS = 5_000, 20_000
MIN_KILLS = 5  # of the relay and of the workers, each
KILL_EVERY = (2.0, 5.0)  # seconds between kills, so the restarted processes also work
CATCH_UP_DEADLINE = 240.0


def test_verify_finds_no_mismatch_after_a_shop_run_with_kills(
    pg_database: Callable[[], str],
    mysql_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
    processes: Processes,
    tmp_path: Path,
) -> None:
    rng = random.Random(5150)
    store = pg_database()
    config = write_config(
        tmp_path / "shop.toml",
        {
            "projections": [
                "projections.reference.user_directory",
                "projections.reference.product_catalog",
                "projections.reference.order_summary",
                "projections.reference.customer_stats",
            ],
            "store": {"url": store},
            "broker": broker_for("redis"),
            "engine": {"batch_size": 500, "sweep_every": "1s"},
            "sources": {
                "auth": {"url": mysql_database()},
                "products": {"url": pg_database()},
                "orders": {"url": pg_database()},
            },
        },
    )
    for command in (["migrate"], ["reference", "init"]):
        result = run_cli([*command, "--config", str(config)])
        assert result.exit_code == 0, result.output

    work = ("work", "--config", str(config), "-p", "1", "-t", "4")
    relay = processes.start("relay", "relay", "--config", str(config))
    workers = [processes.start("worker", *work) for _ in range(2)]
    simulate = processes.start(
        "simulate",
        *("simulate", "--config", str(config), "--users", str(USERS), "--orders", str(ORDERS)),
        *("--seed", "77"),
    )
    simulator = processes.running[simulate]
    kills = {"relay": 0, "worker": 0}
    while min(kills.values()) < MIN_KILLS:
        time.sleep(rng.uniform(*KILL_EVERY))
        dead = {k: p.returncode for k, p in processes.running.items() if p.poll() is not None}
        dead.pop(simulate, None)
        assert not dead, f"exited on their own: {dead}\n" + processes.log_tail()
        if kills["relay"] <= kills["worker"]:
            processes.kill(relay)
            relay = processes.start("relay", "relay", "--config", str(config))
            kills["relay"] += 1
        else:
            booted = [key for key in workers if processes.worker_started(key)]
            if not booted:
                continue
            victim = rng.choice(booted)
            processes.kill(victim)
            workers.remove(victim)
            workers.append(processes.start("worker", *work))
            kills["worker"] += 1
    assert simulator.wait(timeout=600) == 0, processes.log_tail()
    processes.running.pop(simulate)

    deadline = time.monotonic() + CATCH_UP_DEADLINE
    while not pipeline_caught_up(config):
        assert time.monotonic() < deadline, "not caught up\n" + processes.log_tail()
        time.sleep(1)
    while not all(processes.worker_started(key) for key in workers):  # SIGTERM while importing
        time.sleep(0.2)
    codes = processes.stop_all()
    assert set(codes.values()) == {0}, f"exit codes {codes}\n" + processes.log_tail()

    result = run_cli(["verify", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["behind"] == ""
    checked = {name: p["checked"] for name, p in report["projections"].items()}
    assert checked["user_directory"] == USERS and checked["order_summary"] == ORDERS
    assert count(store, "SELECT count(*) FROM rm_parked_events") == 0
    assert min(kills.values()) >= MIN_KILLS
