"""A lane whose checkpoint trails the log head with no events of its own past it (the head
moved on with other partitions' events, or types its projection does not read) is sent work
by the sweeper until a worker processes it once: the worker then moves its checkpoint to the
head, and the sweeper sends it nothing more. No lane is re-sent work every sweep for ever.

Measured on a real pipeline: a ``readmodel sweeper`` process and a ``readmodel work`` process
on a Redis broker, whose queue is read while no worker consumes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dramatiq
import pymongo
import pytest
import redis
import sqlalchemy as sa

from config import load_settings
from outbox.db import create_engine
from outbox.envelope import aggregate_hash
from outbox.log import EventLog
from projections.mongo_store import CHECKPOINTS
from projections.store_tables import checkpoints
from tests.broker_helpers import Processes, wait_until
from tests.cache_helpers import append
from tests.cli_helpers import DOC_TOTALS, run_cli, write_config
from tests.outbox_helpers import init_outbox
from tests.projection_fixtures import account_totals

PARTITIONS = 4  # Totals' and DocTotals'
SWEEP_EVERY = 1.0  # seconds


def _account_in(partition: int) -> str:
    """An account whose events go to ``partition`` of Totals."""
    return next(
        f"acct-{i}"
        for i in range(1000)
        if aggregate_hash("account", f"acct-{i}") % PARTITIONS == partition
    )


def _deposits(account: str, count: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [("account", account, "Deposited", {"amount": 1, "seq": s}) for s in range(1, count + 1)]


class _SqlModel:
    """Totals in a SQL store: its lanes' checkpoints and its rows."""

    projection = "tests.projection_fixtures:Totals"

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)

    def checkpoints(self) -> dict[int, int]:
        """``{partition: position}`` of the lanes of ``bank``."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(checkpoints.c.partition, checkpoints.c.position).where(
                    checkpoints.c.projection == "totals", checkpoints.c.source == "bank"
                )
            ).all()
        return {int(partition): int(position) for partition, position in rows}

    def events_of(self, account: str) -> int:
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(account_totals.c.events).where(account_totals.c.account == account)
            ).scalar()
        return int(found or 0)

    def close(self) -> None:
        self.engine.dispose()


class _DocumentModel:
    """DocTotals in a MongoDB store: its lanes' checkpoints and its documents."""

    projection = DOC_TOTALS

    def __init__(self, url: str) -> None:
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
        self.database = self.client.get_default_database()

    def checkpoints(self) -> dict[int, int]:
        found = self.database[CHECKPOINTS].find({"projection": "doc_totals", "source": "bank"})
        return {int(d["partition"]): int(d["position"]) for d in found}

    def events_of(self, account: str) -> int:
        found = self.database["doc_totals"].find_one({"_id": account})
        return int(found["events"]) if found else 0

    def close(self) -> None:
        self.client.close()


class _Queue:
    """The messages waiting in a Dramatiq Redis queue (``namespace`` = ``queue``)."""

    def __init__(self, url: str, queue: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.key = f"{queue}:{queue}.msgs"

    def count(self) -> int:
        return int(self.client.hlen(self.key))

    def lanes(self) -> list[int]:
        """The partitions the waiting messages are for, sorted."""
        bodies = self.client.hvals(self.key)
        return sorted(dramatiq.Message.decode(body).args[2] for body in bodies)


@pytest.mark.parametrize("store", ["postgresql", "sqlite", "mongodb"])
def test_a_lane_with_nothing_of_its_own_past_its_checkpoint_is_sent_work_once(
    store: str,
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    mongo_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
    processes: Processes,
    tmp_path: Path,
) -> None:
    store_url = sqlite_database() if store == "sqlite" else pg_database()  # holds the log
    broker = broker_for("redis")
    settings: dict[str, Any] = {
        "store": {"url": store_url},
        "broker": broker,
        "engine": {"sweep_every": f"{SWEEP_EVERY:g}s"},
        "sources": {"bank": {"url": sqlite_database()}},
    }
    model: _SqlModel | _DocumentModel
    if store == "mongodb":
        docs_url = mongo_database()
        settings["stores"] = {"docs": {"url": docs_url}}
        model = _DocumentModel(docs_url)
    else:
        model = _SqlModel(store_url)
    config = write_config(
        tmp_path / "readmodel.toml", {"projections": [model.projection], **settings}
    )
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    quiet, busy = _account_in(3), _account_in(1)
    log = EventLog(store_url)
    queue = _Queue(broker["url"], broker["queue"])
    try:
        append(log, "bank", _deposits(quiet, 3))
        caught_up = run_cli(["run", "--until-caught-up", "--config", str(config)])
        assert caught_up.exit_code == 0, caught_up.output
        assert model.checkpoints() == {p: 3 for p in range(PARTITIONS)}
        # The head moves on to 12 (appended to the log: nothing is published): events of a
        # type Totals does not read in every partition, then deposits of partition 1 only.
        # Partitions 0, 2 and 3 have nothing of their own past their checkpoint.
        others = [("account", _account_in(p), "Withdrawn", {"amount": 1}) for p in range(4)]
        assert append(log, "bank", [*others, *_deposits(busy, 5)]) == 12

        sweeper = processes.start("sweeper", "sweeper", "--config", str(config))
        # No worker yet: every lane trails the head, each is sent work at every sweep.
        assert wait_until(lambda: queue.count() >= 2 * PARTITIONS, 60), processes.log_tail()
        assert set(queue.lanes()) == set(range(PARTITIONS))

        worker = processes.start("work", "work", "--config", str(config), "-p", "1", "-t", "2")
        assert wait_until(lambda: model.checkpoints() == {p: 12 for p in range(PARTITIONS)}, 60), (
            processes.log_tail()
        )
        assert model.events_of(busy) == 5
        assert wait_until(lambda: queue.count() == 0, 30), processes.log_tail()
        assert wait_until(lambda: processes.worker_started(worker), 30), processes.log_tail()
        processes.kill(worker, sig=15)

        # Nobody consumes now: whatever the sweeper sends stays in the queue. It sends
        # nothing, sweep after sweep: no lane trails the head.
        time.sleep(3.5 * SWEEP_EVERY)
        assert queue.count() == 0, queue.lanes()
        assert processes.running[sweeper].poll() is None, processes.log_tail()
        assert model.checkpoints() == {p: 12 for p in range(PARTITIONS)}
        assert "sweep failed" not in processes.log_tail(200)
    finally:
        queue.client.close()
        log.close()
        model.close()
    assert all(code == 0 for code in processes.stop_all().values()), processes.log_tail()
