"""The Dramatiq pipeline with real brokers: relay and worker processes, Redis and RabbitMQ."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
import sqlalchemy as sa

from config import load_settings
from outbox.db import create_engine
from tests.broker_helpers import BROKER_URLS, Processes, child_pids, wait_until
from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import init_outbox, insert_events
from tests.projection_fixtures import account_totals


def _deposits(n: int, accounts: int, seed: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    rng = random.Random(seed)
    seqs: dict[str, int] = {}
    events = []
    for _ in range(n):
        account = f"acct-{rng.randrange(accounts)}"
        seqs[account] = seqs.get(account, 0) + 1
        events.append(("account", account, "Deposited", {"amount": 1, "seq": seqs[account]}))
    return events


@pytest.mark.parametrize("broker", sorted(BROKER_URLS))
def test_two_processes_eight_threads_keep_order_per_aggregate(
    broker: str,
    broker_for: Callable[[str], dict[str, Any]],
    pg_database: Callable[[], str],
    processes: Processes,
    tmp_path: Path,
) -> None:
    source_url, store_url = pg_database(), pg_database()
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": store_url},
            "broker": broker_for(broker),
            "engine": {"batch_size": 100, "sweep_every": "1s"},
            "sources": {"bank": {"url": source_url, "batch_size": 150}},
        },
    )
    settings = load_settings(config)
    init_outbox(settings.sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    source = create_engine(source_url)
    store = create_engine(store_url)
    try:
        processes.start("worker", "work", "--config", str(config), "-p", "2", "-t", "8")
        processes.start("relay", "relay", "--config", str(config))
        events = _deposits(6000, 60, seed=11)
        for start in range(0, len(events), 200):
            insert_events(source, events[start : start + 200])

        def applied() -> int:
            with store.connect() as conn:
                try:
                    return int(
                        conn.execute(sa.select(sa.func.sum(account_totals.c.events))).scalar() or 0
                    )
                except sa.exc.ProgrammingError:
                    return 0

        assert wait_until(lambda: applied() == len(events), 90), processes.log_tail()
        with store.connect() as conn:
            rows = {r.account: r for r in conn.execute(sa.select(account_totals))}
        assert sum(r.violations for r in rows.values()) == 0
        expected: dict[str, int] = {}
        for _, account, _, _ in events:
            expected[account] = expected.get(account, 0) + 1
        assert {a: r.total for a, r in rows.items()} == expected
        codes = processes.stop_all()
        assert set(codes.values()) <= {0}, processes.log_tail()
    finally:
        source.dispose()
        store.dispose()


@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
def test_queue_depth_counts_ready_delayed_and_dead_messages(
    kind: str, broker_for: Callable[[str], dict[str, Any]]
) -> None:
    """What ``status``, ``health`` and the metrics report for the broker, from real queues."""
    import dramatiq

    from config import BrokerSettings
    from workers.broker import make_broker
    from workers.queues import QueueDepth, queue_depth

    settings = BrokerSettings(**broker_for(kind))
    in_progress = 0 if kind == "redis" else None  # not known on RabbitMQ (no worker here)
    nothing = QueueDepth(kind, settings.queue, 0, 0, 0, in_progress=in_progress)
    assert queue_depth(settings) == nothing  # nothing declared

    broker = make_broker(settings)
    try:
        noop = dramatiq.actor(lambda: None, actor_name="noop", queue_name=settings.queue)
        for _ in range(3):
            noop.send()
        for _ in range(2):
            noop.send_with_options(delay=600_000)
        dead = noop.message()
        if kind == "redis":
            import redis

            client = redis.Redis.from_url(settings.url)
            try:  # where Dramatiq's Redis broker keeps dead-lettered message ids
                client.zadd(f"{settings.namespace}:{settings.queue}.XQ", {dead.message_id: 1})
            finally:
                client.close()
        else:
            broker.channel.basic_publish(  # type: ignore[attr-defined]
                exchange="", routing_key=f"{settings.queue}.XQ", body=dead.encode()
            )
        expected = QueueDepth(kind, settings.queue, 3, 2, 1, in_progress=in_progress)
        assert wait_until(lambda: queue_depth(settings) == expected, 10), queue_depth(settings)
    finally:
        broker.close()

    down = BrokerSettings(
        url="redis://127.0.0.1:1/0" if kind == "redis" else "amqp://guest:guest@127.0.0.1:1/",
        queue=settings.queue,
    )
    unreachable = queue_depth(down, timeout=1.0)
    assert (unreachable.ready, unreachable.delayed, unreachable.dead) == (None, None, None)
    assert unreachable.error is not None and unreachable.error.startswith("broker unreachable")
    assert not unreachable.error.endswith(":"), unreachable.error  # says what went wrong


def test_a_worker_process_that_dies_stops_the_set_with_a_failure(
    broker_for: Callable[[str], dict[str, Any]],
    sqlite_database: Callable[[], str],
    processes: Processes,
    tmp_path: Path,
) -> None:
    """``work -p 2``: one child SIGKILLed (the OOM killer) made the parent go on with one
    worker, say nothing, and exit 0 at SIGTERM. Now it stops the other and exits 1, so that
    its supervisor restarts the set."""
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": sqlite_database()},
            "broker": broker_for("redis"),
            "sources": {"bank": {"url": sqlite_database()}},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    key = processes.start("work", "work", "--config", str(config), "-p", "2", "-t", "1")
    parent = processes.running[key]
    assert wait_until(lambda: len(child_pids(parent.pid)) == 2, 30), processes.log_tail()
    os.kill(child_pids(parent.pid)[0], signal.SIGKILL)
    assert parent.wait(timeout=30) == 1
    assert wait_until(lambda: child_pids(parent.pid) == [], 10)
    assert "worker process exited; stopping the others" in processes.log_tail()


@pytest.mark.parametrize("broker", sorted(BROKER_URLS))
def test_a_message_for_a_lane_the_worker_does_not_have_is_dropped_not_retried(
    broker: str,
    broker_for: Callable[[str], dict[str, Any]],
    sqlite_database: Callable[[], str],
    processes: Processes,
    tmp_path: Path,
) -> None:
    """A projection renamed or removed (or loaded only by another deployment): its messages
    were retried for a year, a traceback each time. Now they are dropped with one line."""
    from config import BrokerSettings
    from workers.actors import APPLY_ACTOR
    from workers.broker import make_broker
    from workers.queues import queue_depth

    broker_settings = broker_for(broker)
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": sqlite_database()},
            "broker": broker_settings,
            "sources": {"bank": {"url": sqlite_database()}},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    settings = BrokerSettings(**broker_settings)
    sender = make_broker(settings)
    try:
        for projection, partition in (("gone", 0), ("totals", 99)):
            message = dramatiq.Message(
                queue_name=settings.queue,
                actor_name=APPLY_ACTOR,
                args=(projection, "bank", partition, 5),
                kwargs={},
                options={},
            )
            sender.enqueue(message)
    finally:
        sender.close()
    processes.start("work", "work", "--config", str(config), "-t", "1")

    def dropped() -> bool:
        depth = queue_depth(settings)
        return (depth.ready, depth.delayed) == (0, 0) and processes.log_tail().count(
            "does not have; dropped"
        ) == 2

    assert wait_until(dropped, 30), processes.log_tail()
    assert "Traceback" not in processes.log_tail()


@pytest.mark.parametrize(
    "url",
    [
        "amqp://guest:Wrong-Pa55@127.0.0.1:5672/%2F",
        "amqp://guest:guest@127.0.0.1:5672/no-such-vhost",
    ],
)
def test_work_exits_at_once_when_the_broker_refuses_it(
    url: str, sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    """It logged "worker started", then a refused login every few seconds, forever."""
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": sqlite_database()},
            "broker": {"url": url, "queue": "rm_test_refused"},
            "sources": {"bank": {"url": sqlite_database()}},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", "work", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,  # it used to run forever
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "broker refused the connection" in result.stderr
    assert "Wrong-Pa55" not in result.stdout + result.stderr


def test_work_waits_for_a_broker_that_is_not_up_yet(
    sqlite_database: Callable[[], str], processes: Processes, tmp_path: Path
) -> None:
    """A broker starting beside the workers (honcho, compose) is not a refusal: ``work``
    keeps trying instead of exiting 3."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": sqlite_database()},
            "broker": {"url": f"redis://127.0.0.1:{port}/0", "queue": "rm_test_not_up"},
            "sources": {"bank": {"url": sqlite_database()}},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    key = processes.start("work", "work", "--config", str(config), "-t", "1")
    assert wait_until(lambda: processes.worker_started(key), 60), processes.log_tail()
    time.sleep(2)  # its consumers meet the absent broker
    assert processes.running[key].poll() is None, processes.log_tail()
    assert processes.stop_all()[key] == 0


def test_a_redis_user_without_rights_is_a_refusal_an_absent_redis_is_not(
    private_redis: Any,
) -> None:
    """``work`` exits 3 only when the broker refuses it: a wrong password, or an ACL user
    without the rights to its queue (redis-py's NoPermissionError); not when Redis is down."""
    from config import BrokerSettings
    from workers.queues import broker_refusal

    server = private_redis()
    with redis.Redis.from_url(private_redis.url) as admin:
        admin.acl_setuser("limited", enabled=True, passwords=["+secret"], commands=["+ping"])
    base = private_redis.url.replace("redis://", "", 1)

    def refusal(user: str) -> str | None:
        url = f"redis://{user}@{base}"
        return broker_refusal(BrokerSettings(url=url, queue="rm_test_acl"), timeout=2)

    assert "broker refused" in (refusal("limited:secret") or "")
    assert "broker refused" in (refusal("limited:wrong") or "")
    server.kill()
    server.wait()
    assert refusal("limited:secret") is None


def test_a_worker_warns_when_the_caches_redis_may_evict_keys(
    broker_for: Callable[[str], dict[str, Any]],
    sqlite_database: Callable[[], str],
    private_redis: Any,
    processes: Processes,
    tmp_path: Path,
) -> None:
    """An evicted tag set leaves its entries un-invalidatable: a worker whose cache Redis
    has a memory limit with an evicting policy says so before "worker started", and only
    then."""
    private_redis()
    with redis.Redis.from_url(private_redis.url) as cache_redis:
        cache_redis.config_set("maxmemory", "64mb")
        cache_redis.config_set("maxmemory-policy", "allkeys-lru")

    def started_worker(name: str) -> str:
        config = write_config(
            tmp_path / f"{name}.toml",
            {
                "projections": ["tests.projection_fixtures:Totals"],
                "store": {"url": sqlite_database()},
                "broker": broker_for("redis"),
                "cache": {"url": private_redis.url, "key_prefix": f"rm_test_{name}:"},
                "sources": {"bank": {"url": sqlite_database()}},
            },
        )
        assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
        key = processes.start(name, "work", "--config", str(config), "-t", "1")
        assert wait_until(lambda: processes.worker_started(key), 60), processes.log_tail()
        return (processes.logs / f"{key}.log").read_text(errors="replace")

    evicting = started_worker("evicting")
    assert "cached reads may go stale" in evicting, evicting
    assert "maxmemory-policy allkeys-lru" in evicting

    with redis.Redis.from_url(private_redis.url) as cache_redis:
        cache_redis.config_set("maxmemory-policy", "noeviction")
    assert "may go stale" not in started_worker("noeviction")
    assert set(processes.stop_all().values()) == {0}
