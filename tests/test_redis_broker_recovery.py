"""The broker's Redis goes away and dead workers are recovered: messages a consumer held are
given back, and queue maintenance never walks the keyspace (``KEYS``) of a shared Redis.

Each test runs its own redis-server (``private_redis``): restarted, or its statistics reset."""

from __future__ import annotations

import time
import uuid
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import MAINTENANCE_SCALE

from config import BrokerSettings
from tests.broker_helpers import wait_until
from workers.broker import make_broker
from workers.redis_broker import WakingRedisBroker


def _broker(url: str, name: str) -> WakingRedisBroker:
    broker = make_broker(BrokerSettings(url=url, queue=name, namespace=name))
    assert isinstance(broker, WakingRedisBroker)
    return broker


def _held(admin: redis.Redis, broker: WakingRedisBroker, queue: str) -> set[bytes]:
    """Redis message ids ``broker`` has fetched from ``queue`` and not acked."""
    return admin.smembers(f"{broker.namespace}:__acks__.{broker.broker_id}.{queue}")


def test_a_delayed_message_held_through_a_broker_restart_is_delivered(private_redis: Any) -> None:
    """The delay-queue consumer holds a retry's message in memory until its eta. Redis
    restarted (with its data): Dramatiq dropped the message from memory, and it stayed in the
    live worker's ack set, delivered to nobody, until the worker exited."""
    server = private_redis(durable=True)
    name = f"rm_test_{uuid.uuid4().hex[:10]}"
    broker = _broker(private_redis.url, name)
    seen: list[int] = []
    note = dramatiq.actor(seen.append, actor_name="note", queue_name=name, broker=broker)
    worker = dramatiq.Worker(broker, queues={name}, worker_threads=1, worker_timeout=100)
    worker.start()
    admin = redis.Redis.from_url(private_redis.url)
    try:
        note.send_with_options(args=(1,), delay=4_000)
        assert wait_until(lambda: len(_held(admin, broker, f"{name}.DQ")) == 1, 10)
        server.terminate()
        server.wait()
        time.sleep(5)  # the consumers meet the refused connection and restart
        private_redis(durable=True)
        assert wait_until(lambda: seen == [1], 30), seen
        assert wait_until(lambda: admin.hlen(f"{name}:{name}.DQ.msgs") == 0, 10)
        assert _held(admin, broker, f"{name}.DQ") == set()
    finally:
        worker.stop(timeout=5_000)
        broker.close()
        admin.close()


def test_a_closed_consumer_gives_back_what_it_fetched_and_did_not_hand_out(
    private_redis: Any,
) -> None:
    """A consumer prefetches; at its close (a worker stopping) the messages it had fetched
    and not handed out stayed in its ack set until maintenance found the worker dead."""
    private_redis()
    name = f"rm_test_{uuid.uuid4().hex[:10]}"
    broker = _broker(private_redis.url, name)
    noop = dramatiq.actor(lambda n: None, actor_name="noop", queue_name=name, broker=broker)
    admin = redis.Redis.from_url(private_redis.url)
    try:
        for n in range(3):
            noop.send(n)
        consumer = broker.consume(name, prefetch=3)
        first = next(consumer)
        assert first is not None
        consumer.close()
        assert admin.llen(f"{name}:{name}") == 2
        assert _held(admin, broker, name) == {first.options["redis_message_id"].encode()}
    finally:
        broker.close()
        admin.close()


def test_a_message_that_does_not_decode_does_not_break_a_consumers_close(
    private_redis: Any,
) -> None:
    """Closing decodes the messages it gives back; one that does not decode stays where it is
    (as Dramatiq leaves it) and the rest are given back."""
    private_redis()
    name = f"rm_test_{uuid.uuid4().hex[:10]}"
    broker = _broker(private_redis.url, name)
    noop = dramatiq.actor(lambda n: None, actor_name="noop", queue_name=name, broker=broker)
    admin = redis.Redis.from_url(private_redis.url)
    try:
        noop.send(1)
        admin.hset(f"{name}:{name}.msgs", "broken", b"not a message")
        admin.rpush(f"{name}:{name}", "broken")
        noop.send(2)
        consumer = broker.consume(name, prefetch=3)
        assert next(consumer) is not None
        consumer.close()
        assert admin.llen(f"{name}:{name}") == 1  # the second message, given back
        assert b"broken" in _held(admin, broker, name)
    finally:
        broker.close()
        admin.close()


def _die(admin: redis.Redis, broker: WakingRedisBroker) -> None:
    """``broker``'s process is gone (SIGKILL): its heartbeat is long past the timeout."""
    admin.zadd(f"{broker.namespace}:__heartbeats__", {broker.broker_id: 0})


def _heartbeats(admin: redis.Redis, namespace: str) -> set[str]:
    return {m.decode() for m in admin.zrange(f"{namespace}:__heartbeats__", 0, -1)}


def test_maintenance_gives_back_a_dead_workers_messages_without_keys(private_redis: Any) -> None:
    """Maintenance ran ``KEYS <namespace>:__acks__.<worker>*`` for every dead worker (every
    process that ever used the broker, once exited): a walk of the whole keyspace, blocking
    a Redis shared with the caches."""
    private_redis()
    name = f"rm_test_{uuid.uuid4().hex[:10]}"
    dead, live = _broker(private_redis.url, name), _broker(private_redis.url, name)
    noop = dramatiq.actor(lambda n: None, actor_name="noop", queue_name=name, broker=dead)
    admin = redis.Redis.from_url(private_redis.url)
    try:
        for n in range(2):
            noop.send(n)
        assert next(dead.consume(name, prefetch=2)) is not None  # both fetched, none acked
        _die(admin, dead)
        admin.config_resetstat()
        live.maintenance_chance = MAINTENANCE_SCALE  # every call does maintenance
        live.do_qsize(name)
        assert admin.llen(f"{name}:{name}") == 2
        assert dead.broker_id not in _heartbeats(admin, name)
        assert _held(admin, dead, name) == set()
        assert "cmdstat_keys" not in admin.info("commandstats")
        assert admin.keys(f"{name}:__ack_queues__.{dead.broker_id}") == []
    finally:
        dead.close()
        live.close()
        admin.close()


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "older-worker"])
def test_a_dead_worker_is_kept_until_its_delay_queue_is_given_back(
    private_redis: Any, recorded: bool
) -> None:
    """A dead worker holding messages of the queue and of its delay queue: the queue's
    maintenance gives back the queue's and keeps the worker; the delay queue's gives back
    the rest and forgets it. ``older-worker``: one that recorded no queues (an earlier
    readmodel) is kept by its delay queue's ack set all the same."""
    private_redis()
    name = f"rm_test_{uuid.uuid4().hex[:10]}"
    dead, live = _broker(private_redis.url, name), _broker(private_redis.url, name)
    noop = dramatiq.actor(lambda n: None, actor_name="noop", queue_name=name, broker=dead)
    admin = redis.Redis.from_url(private_redis.url)
    try:
        noop.send(1)
        noop.send_with_options(args=(2,), delay=60_000)
        assert next(dead.consume(name, prefetch=1)) is not None
        assert next(dead.consume(f"{name}.DQ", prefetch=1)) is not None
        if not recorded:
            admin.delete(f"{name}:__ack_queues__.{dead.broker_id}")
        _die(admin, dead)
        live.maintenance_chance = MAINTENANCE_SCALE
        live.do_qsize(name)
        assert admin.llen(f"{name}:{name}") == 1
        assert dead.broker_id in _heartbeats(admin, name)
        live.do_qsize(f"{name}.DQ")
        assert admin.llen(f"{name}:{name}.DQ") == 1
        assert dead.broker_id not in _heartbeats(admin, name)
    finally:
        dead.close()
        live.close()
        admin.close()


def test_another_dramatiqs_dispatch_script_is_used_as_it_is(
    private_redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dramatiq version whose dispatch script readmodel does not know (pyproject allows any
    2.x): the broker registers dramatiq's own script, warned once, and works; it had raised
    at import, and no readmodel command started."""
    from dramatiq.brokers import redis as dramatiq_redis
    from structlog.testing import capture_logs

    from workers import redis_dispatch

    private_redis()
    changed = dramatiq_redis._scripts["dispatch"].replace(
        b'redis.call("keys"', b'redis.call("KEYS"'
    )
    monkeypatch.setitem(dramatiq_redis._scripts, "dispatch", changed)
    monkeypatch.setattr(redis_dispatch, "_warned", False)
    name = f"rm_test_{uuid.uuid4().hex[:10]}"
    with capture_logs() as logs:
        broker = _broker(private_redis.url, name)
        _broker(private_redis.url, name).close()
    noop = dramatiq.actor(lambda n: None, actor_name="noop", queue_name=name, broker=broker)
    try:
        noop.send(1)
        assert next(broker.consume(name, prefetch=1)) is not None
        assert [e["event"] for e in logs if "dispatch script" in e["event"]] == [
            "dramatiq's Redis dispatch script is not the one readmodel knows; its queue "
            "maintenance runs KEYS (workers/redis_dispatch.py follows dramatiq 2.x)"
        ]
    finally:
        broker.close()
