"""Broker queue depths for ``status``, ``health`` and metrics: ready, delayed, dead-lettered,
and in progress.

Read straight from the broker without consuming anything: on Redis the lengths of the keys
Dramatiq keeps (``<namespace>:<queue>`` and ``<queue>.DQ`` lists of message ids, the
``<queue>.XQ`` sorted set); on RabbitMQ a passive ``queue_declare`` of the three queues. An
in-process (``memory://``) broker has no depth to report.

Delayed messages (retries waiting out their backoff, ``send_with_options(delay=...)``) are
not waiting in ``.DQ`` while a worker runs: on Redis a worker takes them off the list at
once and holds them in its ack set (``<namespace>:__acks__.<worker>.<queue>.DQ``) until
they are due, so "delayed" adds those sets up, each worker found in the heartbeats sorted
set (never ``KEYS``/``SCAN``); a dead worker's are counted until maintenance puts them
back on the list. On RabbitMQ a consumer holds them too (as unacknowledged deliveries, up
to its prefetch), and a passive declare counts only the messages not delivered to any
consumer: "delayed" there is the ones no worker holds.

"In progress" is the messages of the queue workers fetched and have not acknowledged yet:
being handled, or prefetched and waiting their turn in the worker (a Redis worker takes up
to twice its threads at once). "Ready" stays the messages no worker took, so ready plus in
progress is the backlog. On Redis they are the workers' ack sets of the queue
(``<namespace>:__acks__.<worker>.<queue>``, found as for "delayed"); a passive declare on
RabbitMQ does not count a queue's unacknowledged deliveries, so it is not known there
(``None``; the management UI shows them as "unacked").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from config import BrokerSettings
from outbox.db import redact_text


@dataclass(frozen=True, slots=True)
class QueueDepth:
    broker: str
    queue: str
    ready: int | None
    delayed: int | None
    dead: int | None
    error: str | None = None
    in_progress: int | None = None  # fetched by a worker, not yet acknowledged (Redis only)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def broker_kind(settings: BrokerSettings) -> str:
    scheme = settings.url.split("://", 1)[0].lower()
    return {"redis": "redis", "rediss": "redis", "amqp": "rabbitmq", "amqps": "rabbitmq"}.get(
        scheme, "memory"
    )


def queue_depth(settings: BrokerSettings, *, timeout: float = 2.0) -> QueueDepth:
    """The depth of the configured queue; an unreachable broker reports its error."""
    kind = broker_kind(settings)
    try:
        in_progress = None
        if kind == "redis":
            ready, delayed, dead, in_progress = _redis_depth(settings, timeout)
        elif kind == "rabbitmq":
            ready, delayed, dead = _rabbitmq_depth(settings, timeout)
        else:
            return QueueDepth(kind, settings.queue, None, None, None)
    except Exception as exc:  # any driver error means "cannot tell": report it, never raise
        detail = str(exc).strip() or "cannot connect"  # pika's connection errors say nothing
        message = redact_text(f"{type(exc).__name__}: {detail}")
        return QueueDepth(kind, settings.queue, None, None, None, f"broker unreachable: {message}")
    return QueueDepth(kind, settings.queue, ready, delayed, dead, in_progress=in_progress)


def broker_refusal(settings: BrokerSettings, *, timeout: float = 5.0) -> str | None:
    """Why the broker refuses this process (a wrong password, an unknown vhost), or ``None``:
    also when it cannot be reached now, which may pass (a broker starting beside us)."""
    refusal, _ = broker_check(settings, timeout=timeout)
    return refusal


def broker_check(
    settings: BrokerSettings, *, timeout: float = 5.0
) -> tuple[str | None, BaseException | None]:
    """``(refusal, error)``: why the broker refuses this process (see :func:`broker_refusal`),
    else the error that kept it from answering within ``timeout`` (``None``: it answered)."""
    kind = broker_kind(settings)
    try:
        if kind == "redis":
            _redis_depth(settings, timeout)
        elif kind == "rabbitmq":
            _rabbitmq_depth(settings, timeout)
    except Exception as exc:
        if _is_refusal(exc):
            return redact_text(f"broker refused the connection: {type(exc).__name__}: {exc}"), exc
        return None, exc
    return None, None


def _is_refusal(exc: BaseException) -> bool:
    import redis
    from pika.exceptions import (
        ConnectionClosedByBroker,
        ProbableAccessDeniedError,
        ProbableAuthenticationError,
    )

    if isinstance(exc, redis.AuthenticationError | ProbableAuthenticationError):
        return True
    if isinstance(exc, redis.exceptions.NoPermissionError):  # an ACL user without rights
        return True
    if isinstance(exc, ProbableAccessDeniedError):  # an unknown vhost, or no rights on it
        return True
    if isinstance(exc, ConnectionClosedByBroker):
        return exc.reply_code in (403, 530)  # ACCESS_REFUSED, NOT_ALLOWED
    if isinstance(exc, redis.ResponseError):
        return str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM"))
    return False


def _redis_depth(settings: BrokerSettings, timeout: float) -> tuple[int, int, int, int]:
    import redis

    client = redis.Redis.from_url(
        settings.url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        base = f"{settings.namespace}:{settings.queue}"
        with client.pipeline(transaction=False) as pipe:
            pipe.llen(base)
            pipe.llen(f"{base}.DQ")
            pipe.zcard(f"{base}.XQ")
            pipe.zrange(f"{settings.namespace}:__heartbeats__", 0, -1)
            ready, delayed, dead, workers = pipe.execute()
        held, in_progress = _held_by_workers(client, settings, [w.decode() for w in workers])
    finally:
        client.close()
    return int(ready), int(delayed) + held, int(dead), in_progress


def _held_by_workers(client: Any, settings: BrokerSettings, workers: list[str]) -> tuple[int, int]:
    """Messages of ``<queue>.DQ`` and of ``<queue>`` that ``workers`` fetched and hold in
    their ack sets."""
    acks = f"{settings.namespace}:__acks__"
    with client.pipeline(transaction=False) as pipe:
        for worker in workers:
            pipe.scard(f"{acks}.{worker}.{settings.queue}.DQ")
            pipe.scard(f"{acks}.{worker}.{settings.queue}")
        counts = [int(n) for n in pipe.execute()]
    return sum(counts[0::2]), sum(counts[1::2])


def _rabbitmq_depth(settings: BrokerSettings, timeout: float) -> tuple[int, int, int]:
    import pika
    from pika.exceptions import ChannelClosedByBroker

    parameters = pika.URLParameters(settings.url)
    parameters.socket_timeout = timeout
    # The handshake of a broker that takes the connection and never answers waits on
    # stack_timeout (15 s by default), not on the socket's.
    parameters.stack_timeout = min(timeout, parameters.stack_timeout or timeout)
    parameters.blocked_connection_timeout = timeout
    parameters.connection_attempts = 1
    connection = pika.BlockingConnection(parameters)
    counts = []
    try:
        channel = connection.channel()
        for name in (settings.queue, f"{settings.queue}.DQ", f"{settings.queue}.XQ"):
            try:
                declared = channel.queue_declare(queue=name, passive=True)
                counts.append(int(declared.method.message_count))
            except ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    raise
                counts.append(0)  # not declared yet: nothing was ever sent to it
                channel = connection.channel()
    finally:
        connection.close()
    return counts[0], counts[1], counts[2]
