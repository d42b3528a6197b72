"""Broker fixtures and process helpers for tests that run real workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis

REDIS_URL = os.environ.get("READMODEL_TEST_REDIS", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("READMODEL_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
BROKER_URLS = {"redis": REDIS_URL, "rabbitmq": AMQP_URL}


def delete_redis_keys(url: str, pattern: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def cleanup_queue(url: str, queue: str) -> None:
    """Remove every key or queue Dramatiq made for ``queue`` (on Redis, in the namespace of
    the same name, heartbeats included)."""
    if url.startswith("redis"):
        delete_redis_keys(url, f"{queue}:*")
        delete_redis_keys(url, f"dramatiq:*{queue}*")
        return
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel.queue_delete(queue=name)
    finally:
        connection.close()


@pytest.fixture
def broker_for() -> Iterator[Callable[[str], dict[str, Any]]]:
    """``broker_for("redis" | "rabbitmq")`` -> broker settings with a queue of its own."""
    made: list[tuple[str, str]] = []

    def make(kind: str) -> dict[str, Any]:
        queue = f"rm_test_{uuid.uuid4().hex[:10]}"
        made.append((BROKER_URLS[kind], queue))
        if kind == "redis":
            return {"url": BROKER_URLS[kind], "queue": queue, "namespace": queue}
        return {"url": BROKER_URLS[kind], "queue": queue}

    yield make
    for url, queue in made:
        cleanup_queue(url, queue)


class Processes:
    """Subprocesses of a test: started in their own session, always killed at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.counter = 0

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> str:
        self.counter += 1
        key = f"{name}-{self.counter}"
        log = open(self.logs / f"{key}.log", "wb")  # noqa: SIM115 - closed with the process
        command = [sys.executable, "-m", "workers.cli", *args]
        self.running[key] = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        log.close()
        return key

    def worker_started(self, key: str) -> bool:
        """The ``work`` process ``key`` has logged "worker started" (past its broker check,
        its signal handlers in place: a SIGTERM now is a clean stop, not a death)."""
        log = self.logs / f"{key}.log"
        return log.exists() and "worker started" in log.read_text(errors="replace")

    def kill(self, key: str, sig: int = signal.SIGKILL) -> None:
        process = self.running.pop(key)
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)

    def stop_all(self, timeout: float = 20) -> dict[str, int]:
        codes: dict[str, int] = {}
        for process in self.running.values():
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for key, process in list(self.running.items()):
            try:
                codes[key] = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                codes[key] = process.wait()
        self.running.clear()
        return codes

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all(timeout=5)


class DeliverTwice(dramatiq.Middleware):
    """Test middleware: every message is enqueued once more before it is processed."""

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        if message.options.get("readmodel_test_copy"):
            return
        copy = message.copy(
            message_id=str(uuid.uuid4()), options={**message.options, "readmodel_test_copy": True}
        )
        broker.enqueue(copy)


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def child_pids(parent: int) -> list[int]:
    """The pids of ``parent``'s children (``work -p N``'s worker processes)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def _rabbitmqctl(*args: str) -> str:
    result = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, f"rabbitmqctl {' '.join(args)}: {result.stderr}"
    return result.stdout


@pytest.fixture
def rabbitmq_vhost() -> Iterator[str]:
    """An AMQP URL on a virtual host of the test's own (its connections can be closed without
    touching anyone else's), deleted with its queues at the end."""
    vhost = f"rm_test_{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield AMQP_URL.rstrip("/") + "/" + vhost
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def close_vhost_connections(url: str) -> int:
    """Close every client connection to the virtual host of ``url`` (as a broker restart or
    a network failure would); returns how many."""
    vhost = url.rsplit("/", 1)[1]
    listed = _rabbitmqctl("list_connections", "-q", "--no-table-headers", "vhost", "pid")
    pids = [
        pid for name, pid in (line.split("\t") for line in listed.splitlines()) if name == vhost
    ]
    for pid in pids:
        _rabbitmqctl("close_connection", pid, "readmodel test: connection closed")
    return len(pids)


def peek_rabbitmq_queue(url: str, queue: str) -> list[tuple[bool, dramatiq.Message[Any]]]:
    """The messages ready in ``queue``, as ``(redelivered, message)``, left where they were:
    taken unacknowledged, then given back (closing the channel requeues them)."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        found = []
        while True:
            method, _, body = channel.basic_get(queue=queue, auto_ack=False)
            if method is None:
                return found
            found.append((bool(method.redelivered), dramatiq.Message.decode(body)))
    finally:
        connection.close()


def rabbitmq_queue_counts(queue: str) -> dict[str, tuple[int, int]]:
    """``{name: (ready, unacknowledged)}`` of ``queue`` and its delay and dead-letter queues
    (default virtual host): every message has been acknowledged when all are ``(0, 0)``."""
    listed = _rabbitmqctl(
        "list_queues",
        "-q",
        "--no-table-headers",
        "name",
        "messages_ready",
        "messages_unacknowledged",
    )
    counts = {}
    for line in listed.splitlines():
        name, ready, unacked = line.split("\t")
        if name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            counts[name] = (int(ready), int(unacked))
    return counts


def queued_lanes(url: str, queue: str) -> list[tuple[str, str, int, int]]:
    """``(projection, source, partition, target)`` of each apply message waiting in a Redis
    queue whose namespace is ``queue`` (as :func:`broker_for` makes it), sorted."""
    client = redis.Redis.from_url(url)
    try:
        bodies = client.hvals(f"{queue}:{queue}.msgs")
    finally:
        client.close()
    return sorted(tuple(dramatiq.Message.decode(body).args[:4]) for body in bodies)
