"""The reference shop with its MongoDB chat service while the pipeline is SIGKILLed.

``readmodel simulate`` (a subprocess, rate-capped so that it lasts while the kills happen)
writes the shop into PostgreSQL and the chat service into MongoDB; ``readmodel relay`` and
two ``readmodel work`` processes (Redis broker, a queue of this test's own) run the five
reference projections, ``conversation_inbox`` into a MongoDB store. The relay is SIGKILLed
and restarted three times and a worker twice while chat events flow. A worker killed inside
a MongoDB transaction leaves it open until the server drops it (60 s): the lanes it held
wait for that, so the workers are killed early and the catch-up deadline allows for it.
Afterwards ``readmodel verify`` must find every read model equal to the services, and
nothing parked in either store.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from outbox.mongo_connection import mongo_database as database_name
from projections.reference import CHAT_PROJECTION_MODULES, PROJECTION_MODULES
from tests.broker_helpers import Processes
from tests.cli_helpers import write_config
from tests.reference_fleet import ReferenceFleet
from tests.reference_helpers import count

pytestmark = pytest.mark.chaos

USERS, ORDERS, RATE = 200, 800, "120"  # about 3,300 shop actions: ~30 s at that rate
KILLS = {"relay": 3, "worker": 2}
KILL_EVERY = (3.0, 5.0)
CATCH_UP_DEADLINE = 150.0  # a transaction left open by a killed worker holds lanes for 60 s


def test_conversation_inbox_verifies_after_a_chat_run_with_kills(
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
    processes: Processes,
    tmp_path: Path,
) -> None:
    rng = random.Random(4242)
    store, docs, chat = pg_database(), mongo_database(), mongo_database()
    config = write_config(
        tmp_path / "chat.toml",
        {
            "projections": PROJECTION_MODULES + CHAT_PROJECTION_MODULES,
            "store": {"url": store},
            "stores": {"docs": {"url": docs}},
            "broker": broker_for("redis"),
            "engine": {"batch_size": 200, "sweep_every": "1s"},
            "sources": {
                "auth": {"url": pg_database()},
                "products": {"url": pg_database()},
                "orders": {"url": pg_database()},
                "chat": {"url": chat, "lease": "2s"},
            },
        },
    )
    fleet = ReferenceFleet(processes, config, rng)
    fleet.start(USERS, ORDERS, "--seed", "99", "--rate", RATE)
    chat_events_at_kills: list[int] = []
    while any(fleet.kills[k] < n for k, n in KILLS.items()):
        time.sleep(rng.uniform(*KILL_EVERY))
        fleet.assert_none_died()
        chat_events_at_kills.append(_chat_events(docs))
        kills = fleet.kills
        if kills["worker"] < KILLS["worker"] and kills["worker"] <= kills["relay"]:
            fleet.kill_a_worker()
        else:
            fleet.kill_relay()
    assert fleet.simulator_running, "the simulation ended before the kills: make it longer"
    # chat events were being applied while the pipeline was killed
    assert chat_events_at_kills[-1] > chat_events_at_kills[0]
    report = fleet.finish(simulation_timeout=300, catch_up_deadline=CATCH_UP_DEADLINE)
    assert report["notes"] == []
    checked = {name: p["checked"] for name, p in report["projections"].items()}
    assert checked["conversation_inbox"] == USERS // 4
    assert checked["conversation_inbox_notifications"] > USERS // 2
    assert count(store, "SELECT count(*) FROM rm_parked_events") == 0
    client: MongoClient[dict[str, Any]] = MongoClient(docs)
    try:
        assert client[database_name(docs)]["rm_parked_events"].count_documents({}) == 0
    finally:
        client.close()


def _chat_events(docs: str) -> int:
    """Messages and notifications counted by conversation_inbox so far."""
    client: MongoClient[dict[str, Any]] = MongoClient(docs)
    try:
        database = client[database_name(docs)]
        messages = sum(d["message_count"] for d in database["conversation_inbox"].find())
        notified = sum(d["count"] for d in database["conversation_inbox_notifications"].find())
        return messages + notified
    finally:
        client.close()
