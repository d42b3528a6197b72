"""A Dramatiq worker process on Redis (one thread) whose actor waits until the test sets the
key ``<namespace>:release``: it holds the messages it fetched (one handled, the rest
prefetched) in its ack set for as long as the test wants.

``python -m tests.prefetch_worker_child REDIS_URL NAMESPACE QUEUE``; prints ``started``."""

from __future__ import annotations

import signal
import sys
import threading
import time

import dramatiq
import redis

from config import BrokerSettings
from workers.broker import make_broker


def main(url: str, namespace: str, queue: str) -> None:
    broker = make_broker(BrokerSettings(url=url, queue=queue, namespace=namespace))
    client = redis.Redis.from_url(url)

    def wait_for_release() -> None:
        while not client.exists(f"{namespace}:release"):
            time.sleep(0.05)

    dramatiq.actor(wait_for_release, actor_name=f"held_{queue}", queue_name=queue, broker=broker)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.start()
    print("started", flush=True)
    stop.wait()
    worker.stop(timeout=5000)
    broker.close()
    client.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
