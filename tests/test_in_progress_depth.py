"""On Redis, the messages a worker fetched and has not acknowledged (one being handled, the
others prefetched) left ``<queue>`` for the worker's ack set, so ``ready`` (the list alone)
did not count them and the queue looked emptier than it was: they are reported as
``in_progress`` (``status --json``'s broker, the status table and the metrics), ready stays
what no worker took.

A real worker subprocess (tests/prefetch_worker_child.py) under a namespace and queue of
this test's own, whose actor waits until the test releases it."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
import redis

from config import BrokerSettings
from tests.broker_helpers import REDIS_URL, delete_redis_keys, wait_until
from tests.cli_helpers import run_cli, write_config
from workers.broker import make_broker
from workers.queues import queue_depth

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def settings() -> Iterator[BrokerSettings]:
    name = f"rm_test_{uuid.uuid4().hex[:10]}"
    yield BrokerSettings(url=REDIS_URL, queue=name, namespace=name)
    delete_redis_keys(REDIS_URL, f"{name}:*")


@pytest.fixture
def worker(settings: BrokerSettings) -> Iterator[subprocess.Popen[str]]:
    command = [sys.executable, "-m", "tests.prefetch_worker_child"]
    child = subprocess.Popen(
        [*command, settings.url, settings.namespace, settings.queue],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = redis.Redis.from_url(settings.url)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "started"
        yield child
    finally:
        client.set(f"{settings.namespace}:release", 1)
        client.close()
        child.terminate()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_messages_a_worker_fetched_count_as_in_progress_beside_ready(
    settings: BrokerSettings, worker: subprocess.Popen[str], tmp_path: Path
) -> None:
    broker = make_broker(settings)
    try:
        held = dramatiq.actor(
            lambda: None,
            actor_name=f"held_{settings.queue}",
            queue_name=settings.queue,
            broker=broker,
        )
        for _ in range(5):
            held.send()
    finally:
        broker.close()
    client = redis.Redis.from_url(settings.url)
    try:
        listed = f"{settings.namespace}:{settings.queue}"
        # one thread: it takes two at most (one handled, one prefetched), three stay listed
        assert wait_until(lambda: client.llen(listed) == 3, 30), client.llen(listed)
    finally:
        client.close()

    depth = queue_depth(settings)
    assert (depth.ready, depth.in_progress, depth.delayed, depth.dead) == (3, 2, 0, 0)

    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "store": {"url": f"sqlite:///{tmp_path / 'store.db'}"},
            "broker": {
                "url": settings.url,
                "queue": settings.queue,
                "namespace": settings.namespace,
            },
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    status = run_cli(["status", "--json", "--config", str(config)])
    assert status.exit_code == 0, status.output
    document = json.loads(status.stdout)
    assert document["version"] == 2
    assert {k: document["broker"][k] for k in ("ready", "in_progress", "delayed", "dead")} == {
        "ready": 3,
        "in_progress": 2,
        "delayed": 0,
        "dead": 0,
    }
    table = run_cli(["status", "--config", str(config)])
    assert "in progress" in table.stdout, table.output
