"""The Redis broker's wake-ups: an idle worker takes a message at once, not at its next poll."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from tests.broker_helpers import REDIS_URL, delete_redis_keys
from workers.redis_broker import WakingRedisBroker, wake_channel

IDLE_TIMEOUT_MS = 3000  # the worker_timeout: a polling consumer sleeps this long when idle


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"rm_test_{uuid.uuid4().hex[:10]}"
    yield name
    delete_redis_keys(REDIS_URL, f"{name}*")


class Pickups:
    """A worker on ``broker`` whose actor records how long each message waited."""

    def __init__(self, broker: dramatiq.Broker, queue: str) -> None:
        self.waits: list[float] = []
        self.arrived = threading.Event()

        def ping(sent: float) -> None:
            self.waits.append(time.time() - sent)
            self.arrived.set()

        self.actor = dramatiq.actor(
            ping, actor_name=f"ping_{queue}", queue_name=queue, broker=broker
        )
        self.worker = dramatiq.Worker(
            broker, queues={queue}, worker_threads=1, worker_timeout=IDLE_TIMEOUT_MS
        )

    def send_after_idle(self, idle: float) -> float:
        """Let the worker go idle for ``idle`` seconds, send one message, return its wait."""
        time.sleep(idle)
        self.arrived.clear()
        self.actor.send(time.time())
        assert self.arrived.wait(IDLE_TIMEOUT_MS / 1000 * 3), "the message was never processed"
        return self.waits[-1]


def test_an_idle_worker_takes_a_message_at_once(namespace: str) -> None:
    broker = WakingRedisBroker(url=REDIS_URL, namespace=namespace)
    queue = f"{namespace}_q"
    pickups = Pickups(broker, queue)
    pickups.worker.start()
    try:
        waits = [pickups.send_after_idle(1.0) for _ in range(4)]
    finally:
        pickups.worker.stop()
        broker.close()
    # A polling consumer idle for a second sleeps hundreds of ms between polls (its backoff
    # grows to the 3 s timeout); a woken one takes each message within a round trip or two.
    assert max(waits) < 0.1, waits


def test_a_message_without_a_wake_up_still_arrives_by_the_timeout(namespace: str) -> None:
    """Wake-ups are not stored: a message enqueued without one (an older readmodel, a lost
    publish) waits at most the worker timeout."""
    broker = WakingRedisBroker(url=REDIS_URL, namespace=namespace)
    queue = f"{namespace}_q"
    pickups = Pickups(broker, queue)
    plain = RedisBroker(url=REDIS_URL, namespace=namespace)  # enqueues without publishing
    silent = dramatiq.actor(
        lambda sent: None, actor_name=f"ping_{queue}", queue_name=queue, broker=plain
    )
    pickups.worker.start()
    try:
        time.sleep(0.4)
        pickups.arrived.clear()
        silent.send(time.time())
        assert pickups.arrived.wait(IDLE_TIMEOUT_MS / 1000 * 3), "the message was never processed"
    finally:
        pickups.worker.stop()
        broker.close()
        plain.close()
    assert pickups.waits[-1] <= IDLE_TIMEOUT_MS / 1000 + 1.0, pickups.waits


def test_enqueue_many_sends_messages_at_once_with_one_wake_up(namespace: str) -> None:
    broker = WakingRedisBroker(url=REDIS_URL, namespace=namespace)
    queue = f"{namespace}_q"
    pickups = Pickups(broker, queue)
    listener = redis.Redis.from_url(REDIS_URL).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(wake_channel(namespace, queue))
    pickups.worker.start()
    try:
        time.sleep(1.0)
        sent = time.time()
        enqueued = broker.enqueue_many([pickups.actor.message(sent) for _ in range(3)])
        deadline = time.monotonic() + 5
        while len(pickups.waits) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        pickups.actor.send(time.time())  # a single send: a wake-up of its own
        wake_ups = 0
        quiet_until = time.monotonic() + 0.5
        while time.monotonic() < quiet_until:
            if listener.get_message(timeout=0.05) is not None:
                wake_ups += 1
    finally:
        pickups.worker.stop()
        listener.close()
        broker.close()
    assert len({m.options["redis_message_id"] for m in enqueued}) == 3
    assert len(pickups.waits) >= 3, pickups.waits
    assert max(pickups.waits[:3]) < 0.1, pickups.waits
    assert wake_ups == 2, wake_ups
