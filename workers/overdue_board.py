"""Handlers past ``engine.handler_timeout``, recorded in the broker's Redis for ``status`` and
``health``.

The gauge ``readmodel_handlers_overdue`` (:mod:`workers.metrics_timeouts`) lives in
prometheus_client's multiprocess directory: on the worker's machine only, and only with
``metrics.dir`` set. ``status`` and ``health`` run in another process, often on another
machine, and read live figures from the broker (queue depths, the workers' ack sets), so
the workers record their overdue handlers there too, in one hash per namespace,
``<namespace>:__overdue__`` (never ``KEYS``/``SCAN``):

- a field per handler past its bound, ``<worker>.<thread>`` (a random id per process, and
  the applying thread's ident), valued ``"<since> <seen> <projection>"``: ``since``, when it
  passed its bound, and ``seen``, when its worker last said it still runs, both on Redis's
  clock (``TIME``), so a host whose clock is off reports the same ages;
- a worker writes the field when a handler passes its bound, deletes it when the handler
  comes back, and refreshes ``seen`` every :data:`REFRESH` seconds while it holds any: all
  from a thread of the board's own, so neither the watchdog nor the handler's thread waits
  on Redis, and a Redis that does not answer costs the record (logged, written again at the
  next refresh), never a handler;
- a reader counts the fields seen within :data:`STALE` seconds: a worker killed with a
  handler that cannot be interrupted (SIGKILL, the OOM killer, a lost machine), which is how
  such a worker is restarted, stops counting :data:`STALE` seconds later, and the next write
  of any worker drops its fields. Dramatiq's heartbeats (which ``in_progress`` goes by) are
  not used for that: their scores are on each worker's clock, and a dead worker stays
  listed until another worker's maintenance (a random 0.1% of its broker calls) drops it,
  never when it was the only one; the worker's own refresh says it lives, on Redis's clock.

Only workers on a Redis broker record them: with RabbitMQ or an in-process broker the figures
are not known (``None``).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import structlog

from config import BrokerSettings
from outbox.error_text import describe_error
from projections.engine import EngineHooks
from projections.store import BatchResult, Lane

logger = structlog.get_logger("readmodel.worker")

REFRESH = 5.0
"""Seconds between a worker's refreshes of its overdue handlers' fields."""
STALE = 15.0
"""Seconds after its last refresh at which a field no longer counts (its worker is gone)."""

_WRITE = """\
local t = redis.call("TIME")
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local stale = tonumber(ARGV[1])
local drops = tonumber(ARGV[2])
for i = 3, 2 + drops do
    redis.call("HDEL", KEYS[1], ARGV[i])
end
for i = 3 + drops, #ARGV, 3 do
    local since = now - tonumber(ARGV[i + 1])
    redis.call("HSET", KEYS[1], ARGV[i], string.format("%.3f %.3f %s", since, now, ARGV[i + 2]))
end
local fields = redis.call("HGETALL", KEYS[1])
for i = 1, #fields, 2 do
    local seen = tonumber(string.match(fields[i + 1], "^%S+ (%S+)"))
    if seen == nil or seen < now - stale then
        redis.call("HDEL", KEYS[1], fields[i])
    end
end
if #fields > 0 then
    redis.call("EXPIRE", KEYS[1], math.ceil(stale * 4))
end
return 1
"""
"""``KEYS[1]``: the hash; ``ARGV``: STALE, the number of fields to delete, those fields, then
``field, seconds past the bound, projection`` for each handler still overdue."""


def board_key(namespace: str) -> str:
    return f"{namespace}:__overdue__"


@dataclass(frozen=True, slots=True)
class Overdue:
    """The handlers of one projection running past their bound now."""

    handlers: int
    oldest_seconds: float
    """How long the one that passed its bound first has been past it."""


class OverdueBoard:
    """One worker process's record of its overdue handlers in the broker's Redis."""

    def __init__(self, settings: BrokerSettings) -> None:
        from workers.redis_broker import broker_client

        self._client = broker_client(settings.url)
        self._write = self._client.register_script(_WRITE)
        self._key = board_key(settings.namespace)
        self._worker = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._held: dict[str, tuple[str, float]] = {}  # field -> (projection, passed at)
        self._gone: set[str] = set()  # fields to delete
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def handler_overdue(self, projection: str, thread: int) -> None:
        with self._lock:
            self._held[f"{self._worker}.{thread}"] = (projection, time.monotonic())
            self._start()

    def handler_back(self, projection: str, thread: int) -> None:
        field = f"{self._worker}.{thread}"
        with self._lock:
            if self._held.pop(field, None) is not None:
                self._gone.add(field)
                self._start()

    def _start(self) -> None:
        """Wake the writing thread, started when none runs (under ``_lock``)."""
        self._wake.set()
        if self._closed or (self._thread is not None and self._thread.is_alive()):
            return
        self._thread = threading.Thread(target=self._run, name="readmodel-overdue", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(REFRESH)
            self._wake.clear()
            with self._lock:
                if self._closed or not (self._held or self._gone):
                    self._thread = None
                    return
            self._flush()

    def _flush(self) -> bool:
        with self._lock:
            gone, self._gone = self._gone, set()
            now = time.monotonic()
            held = [(f, p, now - at) for f, (p, at) in self._held.items()]
        args: list[Any] = [STALE, len(gone), *gone]
        for field, projection, seconds in held:
            args += [field, round(seconds, 3), projection]
        try:
            self._write(keys=[self._key], args=args)
        except Exception as exc:  # the record is lost for now, never the handler
            logger.warning(
                "cannot record overdue handlers in the broker", error=describe_error(exc)
            )
            with self._lock:
                self._gone |= gone - self._held.keys()
            return False
        return True

    def close(self) -> None:
        """Stop refreshing and delete this worker's fields (a handler still stuck at a clean
        stop is abandoned with its process)."""
        with self._lock:
            self._closed = True
            self._gone |= self._held.keys()
            self._held.clear()
            thread, pending = self._thread, bool(self._gone)
        self._wake.set()
        if thread is not None:
            thread.join(timeout=2)
        if pending:
            self._flush()
        self._client.close()


class BoardHooks(EngineHooks):
    """The engine's hooks ``inner`` (metrics, or none), also telling ``board`` of handlers
    past their bound."""

    def __init__(self, inner: EngineHooks, board: OverdueBoard) -> None:
        self.inner = inner
        self.board = board

    def after_batch(self, lane: Lane, result: BatchResult, seconds: float) -> None:
        self.inner.after_batch(lane, result, seconds)

    def handler_overdue(self, projection: str, thread: int) -> None:
        self.board.handler_overdue(projection, thread)
        self.inner.handler_overdue(projection, thread)

    def handler_back(self, projection: str, thread: int) -> None:
        self.board.handler_back(projection, thread)
        self.inner.handler_back(projection, thread)


def overdue_handlers(settings: BrokerSettings, *, timeout: float) -> dict[str, Overdue]:
    """``{projection: Overdue}`` of the handlers the live workers of the broker's namespace
    record as past their bound now (a projection with none is left out)."""
    import redis

    client = redis.Redis.from_url(
        settings.url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        with client.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.hgetall(board_key(settings.namespace))
            (seconds, micros), fields = pipe.execute()
    finally:
        client.close()
    now = seconds + micros / 1_000_000
    found: dict[str, list[float]] = {}
    for value in fields.values():
        since, seen, projection = value.decode().split(" ", 2)
        if float(seen) >= now - STALE:
            found.setdefault(projection, []).append(float(since))
    return {
        name: Overdue(len(sinces), round(max(0.0, now - min(sinces)), 1))
        for name, sinces in found.items()
    }
