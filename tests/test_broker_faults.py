"""Worker processes on a real broker through faults: a lane whose message was lost is brought
up by the sweeper; on RabbitMQ a poison event is parked after bounded retries (delayed
messages) while the rest flow, also when every connection is closed with messages in flight
and delayed. Each RabbitMQ test runs on a virtual host of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from config import load_settings
from outbox.db import create_engine
from outbox.log import EventLog
from projections.store_tables import failures, parked_events
from tests.broker_helpers import Processes, close_vhost_connections, wait_until
from tests.cache_helpers import append
from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import init_outbox, insert_events
from tests.projection_fixtures import SLOW, account_totals

Event = tuple[str, str, str, dict[str, Any]]


def _deposits(accounts: int, per_account: int) -> list[Event]:
    return [
        ("account", f"acct-{a}", "Deposited", {"amount": a * 100 + seq, "seq": seq})
        for seq in range(1, per_account + 1)
        for a in range(accounts)
    ]


def _expected(events: list[Event], without: str = "") -> dict[str, tuple[int, int, int]]:
    """Per account: (events, total, violations) the read model must hold."""
    out: dict[str, tuple[int, int, int]] = {}
    for _, account, _, payload in events:
        if account != without:
            count, total, _ = out.get(account, (0, 0, 0))
            out[account] = (count + 1, total + payload["amount"], 0)
    return out


def _read_model(store: sa.Engine) -> dict[str, tuple[int, int, int]]:
    try:
        with store.connect() as conn:
            rows = conn.execute(sa.select(account_totals)).all()
    except sa.exc.OperationalError:  # not created yet
        return {}
    return {r.account: (r.events, r.total, r.violations) for r in rows}


def _config(
    tmp_path: Path, store_url: str, source_url: str, broker: dict[str, Any], **engine: Any
) -> Path:
    return write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": store_url},
            "broker": broker,
            "engine": engine,
            "sources": {"bank": {"url": source_url}},
        },
    )


def _start_worker(processes: Processes, config: Path, env: dict[str, str] | None = None) -> str:
    key = processes.start("work", "work", "--config", str(config), "-p", "1", "-t", "2", env=env)
    assert wait_until(lambda: processes.worker_started(key), 60), processes.log_tail()
    return key


def _relay_once(config: Path) -> None:
    relayed = subprocess.run(
        [sys.executable, "-m", "workers.cli", "relay", "--once", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert relayed.returncode == 0, relayed.stderr


@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
def test_the_sweeper_brings_up_a_lane_whose_message_was_lost(
    kind: str,
    broker_for: Callable[[str], dict[str, Any]],
    sqlite_database: Callable[[], str],
    processes: Processes,
    tmp_path: Path,
) -> None:
    """Events reach the log and no message is ever sent for them (a relay killed between
    its append and its publish, a broker that forgot its queue): the worker's sweep sends
    one, and they are applied."""
    store_url, source_url = sqlite_database(), sqlite_database()
    config = _config(tmp_path, store_url, source_url, broker_for(kind), sweep_every="1s")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    key = _start_worker(processes, config)
    events = _deposits(accounts=5, per_account=4)
    log = EventLog(store_url)
    store = create_engine(store_url)
    try:
        append(log, "bank", events)
        assert wait_until(lambda: _read_model(store) == _expected(events), 30), processes.log_tail()
    finally:
        log.close()
        store.dispose()
    assert processes.stop_all()[key] == 0, processes.log_tail()


def _parked(store: sa.Engine, account: str) -> list[tuple[int, str, str]]:
    """(attempts, status, reason) of ``account``'s parked events, in log order."""
    with store.connect() as conn:
        rows = conn.execute(
            sa.select(parked_events.c.attempts, parked_events.c.status, parked_events.c.reason)
            .where(parked_events.c.aggregate_id == account)
            .order_by(parked_events.c.position)
        ).all()
    return [tuple(r) for r in rows]


def _failed_once(store: sa.Engine) -> bool:
    with store.connect() as conn:
        return bool(conn.execute(sa.select(sa.func.count()).select_from(failures)).scalar())


def _queue() -> str:
    return f"rm_test_{uuid.uuid4().hex[:10]}"


def _poison_run(
    tmp_path: Path,
    broker: dict[str, Any],
    sqlite_database: Callable[[], str],
    processes: Processes,
    *,
    per_account: int,
    retry_backoff: str,
    slow: str | None,
    disrupt: Callable[[sa.Engine], None] | None = None,
) -> None:
    """``acct-1``'s handler always fails: with 3 attempts (retries only through delayed
    messages: the sweep runs once an hour), its first event is parked after 3 attempts and
    its later ones behind it, while every other account is applied exactly."""
    store_url, source_url = sqlite_database(), sqlite_database()
    config = _config(
        tmp_path,
        store_url,
        source_url,
        broker,
        max_attempts=3,
        retry_backoff=retry_backoff,
        sweep_every="1h",
        batch_size=5,
    )
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    env = {"READMODEL_TEST_FAIL_ON": "acct-1", **({SLOW: slow} if slow else {})}
    key = _start_worker(processes, config, env)
    events = _deposits(accounts=6, per_account=per_account)
    source, store = create_engine(source_url), create_engine(store_url)
    try:
        insert_events(source, events)
        _relay_once(config)
        if disrupt is not None:
            disrupt(store)

        def settled() -> bool:
            return (
                _read_model(store) == _expected(events, without="acct-1")
                and len(_parked(store, "acct-1")) == per_account
            )

        assert wait_until(settled, 120, interval=0.5), processes.log_tail()
        first, *behind = _parked(store, "acct-1")
        assert first[0] == 3 and first[1] == "parked", first
        assert "refusing acct-1" in first[2], first
        assert all(reason.startswith("held: ") for _, _, reason in behind), behind
    finally:
        source.dispose()
        store.dispose()
    assert processes.stop_all()[key] == 0, processes.log_tail()


def test_a_poison_event_on_rabbitmq_is_parked_after_bounded_retries_and_the_rest_flow(
    rabbitmq_vhost: str,
    sqlite_database: Callable[[], str],
    processes: Processes,
    tmp_path: Path,
) -> None:
    _poison_run(
        tmp_path,
        {"url": rabbitmq_vhost, "queue": _queue()},
        sqlite_database,
        processes,
        per_account=5,
        retry_backoff="200ms",
        slow=None,
    )


def test_rabbitmq_connections_closed_with_messages_in_flight_and_delayed(
    rabbitmq_vhost: str,
    sqlite_database: Callable[[], str],
    processes: Processes,
    tmp_path: Path,
) -> None:
    """Once ``acct-1`` first failed (its retry waits 10 s in the delay queue, held unacked by
    the worker) and while batches are being applied, RabbitMQ closes every connection of
    the worker: the messages it held come back, the worker reconnects, nothing is applied
    twice and the poison is still parked after its 3 attempts."""
    closed: list[int] = []

    def disrupt(store: sa.Engine) -> None:
        assert wait_until(lambda: _failed_once(store), 60), processes.log_tail()
        closed.append(close_vhost_connections(rabbitmq_vhost))

    _poison_run(
        tmp_path,
        {"url": rabbitmq_vhost, "queue": _queue()},
        sqlite_database,
        processes,
        per_account=30,
        retry_backoff="10s",
        slow="0.15",  # 150 events of the other accounts: seconds of batches in flight
        disrupt=disrupt,
    )
    assert closed and closed[0] >= 1
    log = next(processes.logs.glob("work-*.log")).read_text()
    assert "broker unreachable: amqp://127.0.0.1:" in log, log[-3000:]  # the lost connection
    assert "Consumer encountered" not in log and "Traceback" not in log, log[-3000:]


def test_a_broker_redis_restarted_with_messages_in_flight_and_delayed(
    private_redis: Any,
    sqlite_database: Callable[[], str],
    processes: Processes,
    tmp_path: Path,
) -> None:
    """The same on a private redis-server restarted (keeping its data) once ``acct-1`` first
    failed: its retry, held in memory by the worker's delay-queue consumer, stayed in the
    worker's ack set, delivered to nobody, and with the sweep an hour away ``acct-1`` was
    never parked nor the events behind it in its lane applied."""
    server = private_redis(durable=True)
    queue = _queue()

    def disrupt(store: sa.Engine) -> None:
        assert wait_until(lambda: _failed_once(store), 60), processes.log_tail()
        server.terminate()
        server.wait()
        time.sleep(5)  # the consumers meet the refused connection and restart
        private_redis(durable=True)

    _poison_run(
        tmp_path,
        {"url": private_redis.url, "queue": queue, "namespace": queue},
        sqlite_database,
        processes,
        per_account=30,
        retry_backoff="10s",
        slow="0.15",
        disrupt=disrupt,
    )
