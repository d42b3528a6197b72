"""Dramatiq's Redis broker with wake-ups: idle consumers wait for a publish, not a poll.

Dramatiq's Redis consumer polls its queue and, when the queue is empty, sleeps with a
growing backoff up to the worker timeout. A message sent to an idle worker therefore
waits for the next poll (measured here: 4 ms median, 9 ms p99 at a 10 ms timeout, which
costs an idle worker a sixth of a core in polls; up to a second at Dramatiq's default
timeout), against 1-2 ms with a wake-up. Here every enqueue also publishes
on the queue's wake-up channel, and an idle consumer blocks on that channel for up to the
worker timeout instead of sleeping: pickup costs one Redis round trip, and the timeout
only bounds how long a lost wake-up (publishes are not stored) can delay a message.

Every call on the broker's Redis is bounded (:func:`broker_client`): a Redis that stops
answering without closing the connection (a partition, a stopped process, ``CLIENT PAUSE``)
fails the call with a timeout, which the consumer reports as a lost connection, so Dramatiq
restarts it and retries its acks as it does when Redis is down.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Sequence
from typing import Any
from uuid import uuid4

import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import q_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from workers.redis_dispatch import dispatch_script

SOCKET_TIMEOUT = 5.0
"""Seconds a connect or a reply of the broker's Redis may take (redis-py 8's default; older
versions wait for ever). No broker call blocks in Redis (fetches are scripts that return at
once; the idle wait reads the wake-up channel with its own timeout, the worker timeout), so
this only has to outlast a busy Redis (a fork, a slow fsync).
``socket_timeout`` / ``socket_connect_timeout`` in the broker URL's query override it."""

_LOST = (redis.ConnectionError, redis.TimeoutError)

SATURATED_POLL = 0.001
"""Seconds between checks while every prefetch slot is taken (an ack frees one; acks come
from worker threads, which do not publish)."""


def wake_channel(namespace: str, queue_name: str) -> str:
    return f"{namespace}:wake:{queue_name}"


def broker_client(url: str) -> redis.Redis:
    """A client for the broker URL whose every call is bounded; TCP keepalive finds a
    connection whose peer has gone while it is idle."""
    return redis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        socket_keepalive=True,
    )


class WakingRedisBroker(RedisBroker):
    """:class:`dramatiq.brokers.redis.RedisBroker` whose idle consumers wake on enqueue, whose
    maintenance runs no ``KEYS`` (:mod:`workers.redis_dispatch`), and whose consumers give back
    the messages a lost connection left them holding (:meth:`_WakingConsumer.close`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scripts["dispatch"] = self.client.register_script(dispatch_script())
        self._orphans: dict[str, set[str]] = {}
        self._orphans_lock = threading.Lock()

    def keep_orphans(self, queue_name: str, ids: set[str]) -> None:
        """Remember message ids of ``queue_name`` this worker fetched and will never process
        or ack, to give back to the queue once Redis answers."""
        if ids:
            with self._orphans_lock:
                self._orphans.setdefault(queue_name, set()).update(ids)

    def give_back_orphans(self, queue_name: str) -> None:
        """Put the remembered ids of ``queue_name`` back on it (kept if Redis fails)."""
        with self._orphans_lock:
            ids = self._orphans.pop(queue_name, set())
        if not ids:
            return
        try:
            self.do_requeue(queue_name, *ids)
        except BaseException:
            self.keep_orphans(queue_name, ids)
            raise

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        return _WakingConsumer(self, queue_name, prefetch, timeout)

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        enqueued = super().enqueue(message, delay=delay)
        self.client.publish(wake_channel(self.namespace, enqueued.queue_name), b"")
        return enqueued

    def enqueue_many(self, messages: Sequence[Message[Any]]) -> list[Message[Any]]:
        """Enqueue ``messages`` (none delayed) in one round trip, with one wake-up per queue.

        :meth:`enqueue` costs a round trip per message, and the relay sends a message per
        lane of every batch. Here each message goes through Dramatiq's own ``do_enqueue``
        (the ``dispatch`` script call :meth:`enqueue` makes, arguments and all), on a
        shallow copy of this broker whose script call is queued on one pipeline; the
        enqueue middleware hooks run for each message as they do in :meth:`enqueue`."""
        pipe = self.client.pipeline(transaction=False)
        piped = copy.copy(self)
        piped.scripts = {**self.scripts, "dispatch": _OnPipeline(self.scripts["dispatch"], pipe)}
        enqueued = []
        for message in messages:
            message = message.copy(options={"redis_message_id": str(uuid4())})
            self.emit_before("enqueue", message, None)
            piped.do_enqueue(
                message.queue_name, message.options["redis_message_id"], message.encode()
            )
            enqueued.append(message)
        for queue_name in {message.queue_name for message in enqueued}:
            pipe.publish(wake_channel(self.namespace, queue_name), b"")
        pipe.execute()
        for message in enqueued:
            self.emit_after("enqueue", message, None)
        return enqueued


class _OnPipeline:
    """A Redis script whose calls are queued on ``pipe`` instead of sent one by one."""

    def __init__(self, script: Any, pipe: redis.client.Pipeline) -> None:
        self.script = script
        self.pipe = pipe

    def __call__(self, keys: list[Any], args: list[Any]) -> Any:
        return self.script(keys=keys, args=args, client=self.pipe)


class _WakingConsumer(Consumer):
    """Dramatiq's Redis consumer (prefetch cache, acks, requeue) with a blocking idle wait."""

    def __init__(
        self, broker: WakingRedisBroker, queue_name: str, prefetch: int, timeout: int
    ) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = prefetch
        self.timeout = timeout / 1000
        self.message_cache: list[bytes] = []
        self.queued_message_ids: set[str] = set()
        self._handed_out: dict[str, str] = {}  # message id -> Redis message id, until acked
        self._lost = False
        self._wakeups = broker.client.pubsub(ignore_subscribe_messages=True)
        try:
            # Subscribed before the first fetch: a message enqueued after that fetch found
            # the queue empty leaves its wake-up waiting on this connection.
            self._wakeups.subscribe(wake_channel(broker.namespace, queue_name))
            broker.give_back_orphans(queue_name)  # what the consumer before this one lost
        except _LOST as exc:
            self._wakeups.close()
            raise ConnectionClosed(exc) from None

    @property
    def outstanding_message_count(self) -> int:
        return len(self.queued_message_ids) + len(self.message_cache)

    def ack(self, message: MessageProxy) -> None:
        try:
            self.broker.do_ack(self.queue_name, message.options["redis_message_id"])
        except _LOST as exc:
            self._lost = True
            raise ConnectionClosed(exc) from None
        finally:
            self.queued_message_ids.discard(message.message_id)
            self._handed_out.pop(message.message_id, None)

    def nack(self, message: MessageProxy) -> None:
        try:
            self.broker.do_nack(self.queue_name, message.options["redis_message_id"])
        except _LOST as exc:
            self._lost = True
            raise ConnectionClosed(exc) from None
        finally:
            self.queued_message_ids.discard(message.message_id)
            self._handed_out.pop(message.message_id, None)

    def requeue(self, messages: Any) -> None:
        messages = list(messages)
        for message in messages:
            self._handed_out.pop(message.message_id, None)
        ids = [message.options["redis_message_id"] for message in messages]
        if ids:
            try:
                self.broker.do_requeue(self.queue_name, *ids)
            except _LOST as exc:  # Dramatiq expects ConnectionClosed here, as from acks
                self._lost = True
                self.broker.keep_orphans(self.queue_name, set(ids))
                raise ConnectionClosed(exc) from None

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:
                        continue
                    message = Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    self._handed_out[message.message_id] = message.options["redis_message_id"]
                    return MessageProxy(message)
                free = self.prefetch - self.outstanding_message_count
                if free <= 0:
                    time.sleep(SATURATED_POLL)
                    return None
                self._drain_wakeups()
                self.message_cache = self.broker.do_fetch(self.queue_name, free)
                if not self.message_cache:
                    self._wakeups.get_message(timeout=self.timeout)
                    return None
        except _LOST as exc:
            self._lost = True
            raise ConnectionClosed(exc) from None

    def _drain_wakeups(self) -> None:
        """Forget the wake-ups received so far: the fetch that follows sees their messages."""
        while self._wakeups.get_message(timeout=0.0) is not None:
            pass

    def close(self) -> None:
        """Give back the messages this consumer will never hand out or ack: those fetched and
        not handed out and, on a delay queue, those handed out and not acked. Dramatiq drops
        its in-memory delay queue after a connection error without giving them back (at a
        shutdown it gives them back itself, through :meth:`requeue`), and they would stay
        in this live worker's ack set, delivered to nobody, until it exited. After a lost
        connection the broker keeps them for the queue's next consumer."""
        ids = (_redis_id(data) for data in self.message_cache if data is not None)
        orphans = {redis_id for redis_id in ids if redis_id is not None}
        self.message_cache = []
        if self.queue_name != q_name(self.queue_name):  # a delay queue
            orphans.update(self._handed_out.values())
            self._handed_out.clear()
        self.broker.keep_orphans(self.queue_name, orphans)
        try:
            if not self._lost:
                self.broker.give_back_orphans(self.queue_name)
        except _LOST:
            pass  # kept for the next consumer
        finally:
            self._wakeups.close()


def _redis_id(data: bytes) -> str | None:
    """The Redis id of an encoded message; ``None`` for one that does not decode (its fetch
    raises on it as Dramatiq's does; closing must not)."""
    try:
        return str(Message.decode(data).options["redis_message_id"])
    except Exception:
        return None
