"""A lane's message may be applied for longer than Dramatiq's time limit: a lane catching up
a long backlog, or a busy lane whose thread goes on with the targets later messages hand to
it, runs for as long as there is work. Dramatiq's ``TimeLimit`` (10 minutes, active where
the process boot is signalled: the in-process ``memory://`` broker of ``readmodel run``)
raised an exception into that thread wherever it was, in a handler, the store's driver or
its connection pool: the batch in hand was rolled back and logged as a failure, every ten
minutes. Here the limit is scaled down to a second and one batch takes two."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from dramatiq.middleware import TimeLimit

from config import Settings
from tests.broker_helpers import wait_until
from tests.cache_helpers import append
from tests.projection_fixtures import SLOW, account_totals
from workers.broker import make_broker
from workers.runtime import build_runtime
from workers.worker import run_worker


def test_a_lane_applied_for_longer_than_the_time_limit_is_not_interrupted(
    make_settings: Callable[..., Settings],
    sqlite_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(
        sqlite_database(),
        sources={"bank": {"url": sqlite_database()}},
        projections=["tests.projection_fixtures:Totals"],
        engine={"batch_size": 1000, "sweep_every": "1h"},
    )
    runtime = build_runtime(settings)
    broker = make_broker(settings.broker)
    (limit,) = [m for m in broker.middleware if isinstance(m, TimeLimit)]
    limit.time_limit = 1_000  # ms: Dramatiq's ten minutes, scaled down
    monkeypatch.setenv(SLOW, "0.05")  # seconds per event: 40 events, one batch of 2 s
    events: list[tuple[str, str, str, dict[str, Any]]] = [
        ("account", "acct-1", "Deposited", {"amount": seq, "seq": seq}) for seq in range(1, 41)
    ]
    append(runtime.log, "bank", events)

    def applied() -> int:
        with runtime.log.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.sum(account_totals.c.events))).scalar() or 0)

    stop = threading.Event()
    worker = threading.Thread(
        target=run_worker, args=(runtime, broker, stop), kwargs={"threads": 1}, daemon=True
    )
    worker.start()  # its first sweep sends the lane's message
    try:
        assert wait_until(lambda: applied() == 40, 30), applied()
    finally:
        stop.set()
        worker.join(30)
        runtime.close()
        broker.close()
