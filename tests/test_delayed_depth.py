"""The "delayed" queue depth counts the retries a worker holds: Dramatiq's Redis worker takes
a delayed message off ``<queue>.DQ`` at once and keeps it in its ack set until it is due,
so the list alone read 0 while a retry waited out its backoff.

A real worker on the shared Redis, under a namespace and queue of this test's own, runs an
actor that fails once with a ten-minute backoff."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
import redis

from config import BrokerSettings
from tests.broker_helpers import REDIS_URL, delete_redis_keys, wait_until
from workers.broker import make_broker
from workers.queues import queue_depth


@pytest.fixture
def settings() -> Iterator[BrokerSettings]:
    name = f"rm_test_{uuid.uuid4().hex[:10]}"
    yield BrokerSettings(url=REDIS_URL, queue=name, namespace=name)
    delete_redis_keys(REDIS_URL, f"{name}:*")


def test_a_retry_a_worker_holds_counts_as_delayed(settings: BrokerSettings) -> None:
    broker = make_broker(settings)
    failed = threading.Event()

    def fail_once() -> None:
        if not failed.is_set():
            failed.set()
            raise RuntimeError("fails once")

    actor = dramatiq.actor(
        fail_once,
        actor_name=f"fail_once_{settings.queue}",
        queue_name=settings.queue,
        broker=broker,
        max_retries=3,
        min_backoff=600_000,
        max_backoff=600_000,
    )
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        actor.send()
        assert failed.wait(30), "the actor never ran"
        base = f"{settings.namespace}:{settings.queue}"
        held = f"{settings.namespace}:__acks__.*.{settings.queue}.DQ"

        def taken_by_the_worker() -> bool:  # the retry left .DQ for the worker's ack set
            return client.llen(f"{base}.DQ") == 0 and any(
                client.scard(k) == 1 for k in client.scan_iter(match=held)
            )

        assert wait_until(taken_by_the_worker, 30), "the retry never reached the worker"

        depth = queue_depth(settings)

        assert (depth.ready, depth.delayed, depth.dead, depth.error) == (0, 1, 0, None)
    finally:
        worker.stop()
        broker.close()
        client.close()
