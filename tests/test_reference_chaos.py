"""The reference shop on real servers while its pipeline is SIGKILLed.

``readmodel simulate`` writes 2,500 users and 10,000 orders (about 42,000 business
actions: auth on MariaDB, products and orders on PostgreSQL) as a subprocess, while
``readmodel relay`` and two ``readmodel work`` processes (Redis broker, a queue of this
test's own) run the four reference projections. Every few seconds the relay or a worker
is SIGKILLed (by pid) and started again, five times each, while the shop is busy. Afterwards,
once every outbox is drained and every lane has reached the log head, ``readmodel
verify`` must find every read model equal to what the services hold, nothing parked.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.broker_helpers import Processes
from tests.cli_helpers import write_config
from tests.reference_fleet import ReferenceFleet
from tests.reference_helpers import count

pytestmark = pytest.mark.chaos

USERS, ORDERS = 2_500, 10_000
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
    fleet = ReferenceFleet(processes, config, rng)
    fleet.start(USERS, ORDERS, "--seed", "77")
    while min(fleet.kills.values()) < MIN_KILLS:
        time.sleep(rng.uniform(*KILL_EVERY))
        fleet.assert_none_died()
        if fleet.kills["relay"] <= fleet.kills["worker"]:
            fleet.kill_relay()
        else:
            fleet.kill_a_worker()
    report = fleet.finish(simulation_timeout=600, catch_up_deadline=CATCH_UP_DEADLINE)

    checked = {name: p["checked"] for name, p in report["projections"].items()}
    assert checked["user_directory"] == USERS and checked["order_summary"] == ORDERS
    assert count(store, "SELECT count(*) FROM rm_parked_events") == 0
