"""One readable line per failed attempt of the Dramatiq consumers to reach the broker.

Dramatiq's consumer threads report a broker they cannot reach as "Consumer encountered a
connection error: Timeout reading from socket" (Redis), or, when pika fails inside
Dramatiq's queue declaration, "Consumer encountered an unexpected error." with pika's whole
traceback (RabbitMQ); both critical, once per consumer thread (the queue and its delay
queue), neither naming the broker. :class:`BrokerErrorLines` rewrites those records into
``broker unreachable: amqp://host:port/: timeout during AMQP handshake; retrying in 3s``
(the address without user or password), once per attempt. Other errors pass unchanged."""

from __future__ import annotations

import logging
import threading
import time

from dramatiq import errors as dramatiq_errors

from outbox.db import redact_dsn
from outbox.error_text import connection_reason, describe_error, short_reason


def restart_delay() -> float:
    """Seconds Dramatiq's consumers wait before trying the broker again."""
    from dramatiq import worker

    return float(worker.CONSUMER_RESTART_DELAY_SECS)


def broker_address(url: str) -> str:
    """Where the broker is, as readmodel logs it: no user, password or query."""
    return redact_dsn(url, location=True)


def unreachable_reason(exc: BaseException) -> str | None:
    """A short reason when ``exc`` says the broker cannot be reached, else ``None``."""
    if isinstance(exc, dramatiq_errors.BrokerConnectionError):
        inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        inner = inner or exc.__cause__
        return (unreachable_reason(inner) if inner else None) or short_reason(exc)
    return connection_reason(exc)


def describe_broker_error(exc: BaseException) -> str:
    """One short line for a failed call on the broker: the reason when the broker cannot be
    reached (not the drivers' nested reprs), else :func:`outbox.error_text.describe_error`'s
    (a database's, met by the sweep, without SQL or parameters); no password."""
    reason = unreachable_reason(exc)
    return reason if reason is not None else describe_error(exc)


class BrokerErrorLines(logging.Filter):
    """Turns a consumer thread's connection error into one warning naming the broker; the
    same line from the other consumer thread of the same attempt is dropped."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.address = broker_address(url)
        self._lock = threading.Lock()
        self._last: tuple[str, float] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        reason = self._reason(record)
        if reason is None:
            return True
        delay = restart_delay()
        line = f"broker unreachable: {self.address}: {reason}; retrying in {delay:g}s"
        now = time.monotonic()
        with self._lock:  # both threads fail together; each retries ``delay`` s later at best
            if self._last is not None and self._last[0] == line and now - self._last[1] < delay / 2:
                return False
            self._last = (line, now)
        record.name = "readmodel.worker"  # the line is the attempt's, not one thread's
        record.msg, record.args = line, ()
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True

    @staticmethod
    def _reason(record: logging.LogRecord) -> str | None:
        if not str(record.msg).startswith("Consumer encountered"):
            return None
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None and record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            exc = next((a for a in args if isinstance(a, BaseException)), None)
        return unreachable_reason(exc) if exc is not None else None


def tame_consumer_errors(url: str, queues: list[str]) -> None:
    """Install :class:`BrokerErrorLines` on the loggers of the consumer threads of ``queues``
    (and their delay queues): Dramatiq names them ``ConsumerThread(<queue>)``."""
    lines = BrokerErrorLines(url)
    for queue in queues:
        for name in (queue, f"{queue}.DQ"):
            logger = logging.getLogger(f"dramatiq.worker.ConsumerThread({name})")
            for old in [f for f in logger.filters if isinstance(f, BrokerErrorLines)]:
                logger.removeFilter(old)
            logger.addFilter(lines)
