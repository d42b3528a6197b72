"""A projection handler that never returns, in a real worker process on a Redis broker.

Dramatiq's ``TimeLimit`` is off for the apply actor (a lane's message may rightly run for
long), and on Redis and RabbitMQ it never ran anyway (its timer starts at the process
boot, which ``readmodel work`` does not signal): a hung handler held its lane for good,
the events of every aggregate of that lane waited behind it without end, and nothing was
parked. ``engine.handler_timeout`` bounds each event's handler: past it the event fails as
if the handler had raised (retried, then parked with the reason), and the lane goes on."""

from __future__ import annotations

import signal
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from config import Settings, load_settings
from outbox.db import create_engine
from outbox.envelope import aggregate_hash
from outbox.log import EventLog
from projections.store_tables import failures, parked_events
from tests.broker_helpers import Processes, wait_until
from tests.cache_helpers import append
from tests.cli_helpers import run_cli, write_config
from tests.projection_fixtures import (
    HANG_HOW,
    HANG_LOCK,
    HANG_ON,
    SLOW,
    read_balances,
    read_totals,
)
from workers.runtime import build_runtime

HUNG = "acct-1"
Event = tuple[str, str, str, dict[str, Any]]


def _deposits(accounts: int, per_account: int) -> list[Event]:
    return [
        ("account", f"acct-{a}", "Deposited", {"amount": a * 100 + seq, "seq": seq})
        for seq in range(1, per_account + 1)
        for a in range(accounts)
    ]


def _config(
    tmp_path: Path, store_url: str, source_url: str, broker: dict[str, Any], **settings: Any
) -> Path:
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": [
                "tests.projection_fixtures:Totals",
                "tests.projection_fixtures:Balances",
            ],
            "store": {"url": store_url},
            "broker": broker,
            "sources": {"bank": {"url": source_url}},
            **settings,
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    return config


def _start_worker(processes: Processes, config: Path, how: str = "loop") -> str:
    env = {HANG_ON: HUNG, HANG_HOW: how}
    key = processes.start("work", "work", "--config", str(config), "-p", "1", "-t", "2", env=env)
    assert wait_until(lambda: processes.worker_started(key), 60), processes.log_tail()
    return key


def _expected(events: list[Event]) -> dict[str, tuple[int, int, int]]:
    out: dict[str, tuple[int, int, int]] = {}
    for _, account, _, payload in events:
        count, total, _ = out.get(account, (0, 0, 0))
        out[account] = (count + 1, total + payload["amount"], 0)
    return out


def _parked(store: sa.Engine) -> list[tuple[str, int, str, str]]:
    """(aggregate, attempts, status, reason) of the totals' parked events, in log order."""
    with store.connect() as conn:
        rows = conn.execute(
            sa.select(
                parked_events.c.aggregate_id,
                parked_events.c.attempts,
                parked_events.c.status,
                parked_events.c.reason,
            )
            .where(parked_events.c.projection == "totals")
            .order_by(parked_events.c.position)
        ).all()
    return [tuple(r) for r in rows]


@pytest.mark.parametrize("how", ["loop", "lock"])
def test_a_hung_handler_is_parked_with_its_reason_and_its_lane_goes_on(
    how: str,
    broker_for: Callable[[str], dict[str, Any]],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    processes: Processes,
    tmp_path: Path,
) -> None:
    """``acct-1``'s handler never returns (``loop``: an endless loop in Python; ``lock``:
    waiting in PostgreSQL for a lock the test holds). Its first event is interrupted after
    the timeout, twice, then parked with the reason; its later events are held behind it
    (order per aggregate); ``acct-3``, in the same lane, and the other lanes and
    projection are applied, exactly once."""
    lane = aggregate_hash("account", HUNG) % 4
    assert aggregate_hash("account", "acct-3") % 4 == lane  # the hung one's lane
    store_url = pg_database()
    config = _config(
        tmp_path,
        store_url,
        sqlite_database(),
        broker_for("redis"),
        engine={
            "handler_timeout": "1s",
            "max_attempts": 2,
            "retry_backoff": "100ms",
            "sweep_every": "1h",
            "batch_size": 5,
        },
    )
    events = _deposits(accounts=6, per_account=4)
    log, store = EventLog(store_url), create_engine(store_url)
    append(log, "bank", events)  # the worker's first sweep sends every lane's message
    holder = store.connect()
    holder.execute(sa.text(f"SELECT pg_advisory_lock({HANG_LOCK})"))
    key = _start_worker(processes, config, how)
    try:
        expected = _expected(events)
        others = {account: v for account, v in expected.items() if account != HUNG}
        all_balances = {account: total for account, (_, total, _) in expected.items()}

        def settled() -> bool:
            return (
                read_totals(store) == others
                and read_balances(store) == all_balances
                and len(_parked(store)) == 4
            )

        assert wait_until(settled, 120, interval=0.5), (_parked(store), processes.log_tail())
        (account, attempts, status, reason), *behind = _parked(store)
        assert (account, attempts, status) == (HUNG, 2, "parked")
        assert "handler exceeded 1s" in reason, reason
        assert all(a == HUNG and r.startswith("held: ") for a, _, _, r in behind), behind
    finally:
        holder.close()
        log.close()
        store.dispose()
    assert processes.stop_all()[key] == 0, processes.log_tail()


def test_sigterm_stops_a_worker_whose_handler_hangs_within_the_grace(
    broker_for: Callable[[str], dict[str, Any]],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    processes: Processes,
    tmp_path: Path,
) -> None:
    """Without a handler timeout, the hung handler holds its thread: SIGTERM still ends the
    worker once ``shutdown.grace`` has passed (exit 1, saying so); the hung batch was never
    committed, and the other lanes were applied."""
    store_url = pg_database()
    config = _config(
        tmp_path,
        store_url,
        sqlite_database(),
        broker_for("redis"),
        engine={"handler_timeout": "off", "sweep_every": "1h"},
        shutdown={"grace": "2s"},
    )
    events = _deposits(accounts=6, per_account=2)
    log, store = EventLog(store_url), create_engine(store_url)
    append(log, "bank", events)  # the worker's first sweep sends every lane's message
    key = _start_worker(processes, config)
    try:
        lane = aggregate_hash("account", HUNG) % 4
        others = {
            account: v
            for account, v in _expected(events).items()
            if aggregate_hash("account", account) % 4 != lane
        }
        assert wait_until(lambda: read_totals(store) == others, 60), processes.log_tail()
        process = processes.running[key]
        processes.kill(key, signal.SIGTERM)  # waits up to 30 s for the exit
        assert process.returncode == 1, processes.log_tail()
        assert "did not stop within 2s" in processes.log_tail(), processes.log_tail()
        assert read_totals(store) == others
    finally:
        log.close()
        store.dispose()


def test_the_handler_timeout_is_five_minutes_unless_set_or_off() -> None:
    assert load_settings(None).engine.handler_timeout == timedelta(minutes=5)
    engine = load_settings(None, engine={"handler_timeout": "90s"}).engine
    assert engine.handler_timeout == timedelta(seconds=90)
    assert load_settings(None, engine={"handler_timeout": "off"}).engine.handler_timeout is None


def test_the_bound_is_per_event_not_per_batch(
    make_settings: Callable[..., Settings],
    sqlite_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """40 events of 0.05 s each in one batch of 2 s, under a bound of 1 s: none is
    interrupted, none fails."""
    settings = make_settings(
        sqlite_database(),
        sources={"bank": {"url": sqlite_database()}},
        projections=["tests.projection_fixtures:Totals"],
        engine={"batch_size": 1000, "handler_timeout": "1s"},
    )
    runtime = build_runtime(settings)
    monkeypatch.setenv(SLOW, "0.05")
    events = [("account", "acct-1", "Deposited", {"amount": s, "seq": s}) for s in range(1, 41)]
    try:
        append(runtime.log, "bank", events)
        assert runtime.engine.catch_up(deadline=60) == 40
        assert read_totals(runtime.log.engine) == {"acct-1": (40, sum(range(1, 41)), 0)}
        with runtime.log.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(failures)).scalar() == 0
    finally:
        runtime.close()
