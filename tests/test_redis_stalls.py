"""A broker Redis that stops answering without closing its connections (a partition, a
SIGSTOP, CLIENT PAUSE): every call on it fails within a bound, the failure is logged as
a connection error, and work flows again once Redis answers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
import sqlalchemy as sa

from config import BrokerSettings, load_settings
from outbox.db import create_engine
from tests.broker_helpers import Processes, wait_until
from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import init_outbox, insert_events
from tests.projection_fixtures import account_totals
from tests.redis_stall_helpers import outcome_within, stalled
from workers.broker import make_broker

BOUND = 15.0  # seconds a call on a stalled broker may take: the socket timeout and a margin
STALL = 12.0  # longer than two socket timeouts: a call, then the restart after it, meet it


@pytest.fixture
def stalling_broker(private_redis: Any) -> Any:
    """A broker on a private redis-server (its process as ``.server``), closed at the end."""
    server = private_redis()
    name = f"rm_test_{uuid.uuid4().hex[:10]}"
    broker = make_broker(BrokerSettings(url=private_redis.url, queue=name, namespace=name))
    broker.server = server  # type: ignore[attr-defined]
    broker.test_queue = name  # type: ignore[attr-defined]
    yield broker
    broker.close()


def test_an_enqueue_to_a_stalled_broker_fails_within_the_bound(stalling_broker: Any) -> None:
    """The relay's publish and the sweep's re-sends (``enqueue_many``) raise instead of
    waiting for ever; the same broker enqueues again once Redis answers."""
    broker, queue = stalling_broker, stalling_broker.test_queue
    noop = dramatiq.actor(lambda: None, actor_name="noop", queue_name=queue, broker=broker)
    broker.enqueue_many([noop.message()])
    with stalled(broker.server):
        error, took = outcome_within(lambda: broker.enqueue_many([noop.message()]), BOUND)
    assert isinstance(error, redis.RedisError), error
    assert took >= 1.0, took  # a timeout, not a refused connection
    broker.enqueue_many([noop.message()])
    with redis.Redis(**_address(broker)) as admin:
        assert admin.llen(f"{queue}:{queue}") == 2


def test_a_worker_keeps_consuming_delayed_messages_after_a_stall(stalling_broker: Any) -> None:
    """The consumer of the delay queue holds messages in memory: a stall ended it (its
    restart tried to give them back to the stalled Redis, and that error escaped it), and
    no delayed message (a retry's backoff) was taken again by this worker."""
    broker, queue = stalling_broker, stalling_broker.test_queue
    seen: list[int] = []
    note = dramatiq.actor(seen.append, actor_name="note", queue_name=queue, broker=broker)
    worker = dramatiq.Worker(broker, queues={queue}, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        note.send_with_options(args=(1,), delay=60_000)  # held by the delay-queue consumer
        time.sleep(0.5)
        with stalled(broker.server):
            time.sleep(STALL)
        note.send_with_options(args=(2,), delay=100)
        assert wait_until(lambda: 2 in seen, BOUND), seen
    finally:
        worker.stop(timeout=5_000)


def _address(broker: Any) -> dict[str, Any]:
    kwargs = broker.client.connection_pool.connection_kwargs
    return {"host": kwargs.get("host", "localhost"), "port": kwargs.get("port", 6379)}


def test_a_pipeline_logs_a_stalled_broker_and_resumes(
    private_redis: Any,
    sqlite_database: Callable[[], str],
    processes: Processes,
    tmp_path: Path,
) -> None:
    """``readmodel run`` (relay, sweeper and consumers in one process): the relay's publish
    and the sweep fail with a log line each within the bound, the consumers report the
    broker unreachable (one line, no traceback), and an event committed
    during the stall is applied once Redis answers."""
    server = private_redis()
    source_url, store_url = sqlite_database(), sqlite_database()
    name = f"rm_test_{uuid.uuid4().hex[:10]}"
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": store_url},
            "broker": {"url": private_redis.url, "queue": name, "namespace": name},
            "engine": {"sweep_every": "1s"},
            "sources": {"bank": {"url": source_url}},
        },
    )
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    source, store = create_engine(source_url), create_engine(store_url)

    def applied() -> int:
        with store.connect() as conn:
            return int(conn.execute(sa.select(sa.func.sum(account_totals.c.events))).scalar() or 0)

    def deposit(seq: int) -> None:
        insert_events(source, [("account", "a", "Deposited", {"amount": 1, "seq": seq})])

    try:
        key = processes.start("run", "run", "--config", str(config), "-t", "2")
        assert wait_until(lambda: processes.worker_started(key), 60), processes.log_tail()
        log = processes.logs / f"{key}.log"
        deposit(1)
        assert wait_until(lambda: applied() == 1, 30), processes.log_tail()
        with stalled(server):
            deposit(2)
            lines = ("publishing to the broker failed", "sweep failed")
            assert wait_until(lambda: all(line in log.read_text() for line in lines), BOUND), (
                processes.log_tail()
            )
            time.sleep(STALL)
        assert wait_until(lambda: applied() == 2, 30), processes.log_tail()
        text = log.read_text()
        assert "broker unreachable: redis://127.0.0.1:" in text, text
        assert "unexpected error" not in text and "Traceback" not in text, text
        assert processes.stop_all()[key] == 0, processes.log_tail()
    finally:
        source.dispose()
        store.dispose()


def test_the_broker_url_can_give_a_farther_redis_more_time() -> None:
    from workers.redis_broker import SOCKET_TIMEOUT, broker_client

    plain = broker_client("redis://127.0.0.1:6379/0").connection_pool.connection_kwargs
    assert (plain["socket_timeout"], plain["socket_connect_timeout"]) == (SOCKET_TIMEOUT,) * 2
    assert plain["socket_keepalive"] is True
    query = "?socket_timeout=20&socket_connect_timeout=3"
    given = broker_client(f"redis://127.0.0.1:6379/0{query}").connection_pool.connection_kwargs
    assert (given["socket_timeout"], given["socket_connect_timeout"]) == (20.0, 3.0)
