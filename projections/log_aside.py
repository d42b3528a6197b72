"""Log lines written by a thread of their own, for callers that must not wait on stderr.

A write to stderr waits while its pipe is full and nobody reads it (a log collector that
stopped reading): a logging call waits with it, and every later one behind its lock. The
handler-timeout watchdog and the stuck exit log on their way to interrupting a handler or
exiting the worker; waiting there would keep a stuck worker from ever exiting. Their lines
go to :func:`log_aside`: one writer thread logs them in order, the caller waits for its line
at most as long as it says (not at all by default). Lines the writer has not taken yet are
kept, up to :data:`MAX_PENDING`; past that they are dropped, and the next line written
says how many.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import structlog

MAX_PENDING = 1000
"""Lines kept while the writer waits on stderr; more are dropped (and counted)."""

_Line = tuple[Callable[..., Any], str, dict[str, Any], threading.Event]


class _Writer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: queue.Queue[_Line] = queue.Queue(MAX_PENDING)
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def put(self, line: _Line) -> bool:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="readmodel-log-aside", daemon=True
                )
                self._thread.start()
            try:
                self._lines.put_nowait(line)
            except queue.Full:
                self.dropped += 1
                return False
        return True

    def _run(self) -> None:
        while True:
            log, event, fields, written = self._lines.get()
            with self._lock:
                dropped, self.dropped = self.dropped, 0
            try:
                if dropped:
                    structlog.get_logger("readmodel").warning(
                        "log lines dropped: stderr was not read", lines=dropped
                    )
                log(event, **fields)
            except Exception:  # a line that fails (EPIPE) is lost, not the writer
                pass
            finally:
                written.set()


_WRITER = _Writer()


def log_aside(log: Callable[..., Any], event: str, *, wait: float = 0.0, **fields: Any) -> bool:
    """``log(event, **fields)`` (a structlog method: ``logger.warning``) on the writer
    thread; waits for it at most ``wait`` seconds. Whether it was written in that time."""
    written = threading.Event()
    if not _WRITER.put((log, event, fields, written)):
        return False
    return written.wait(wait) if wait > 0 else written.is_set()
