"""Parts of one look at the pipeline (``status``, ``health``, a metrics scrape, the check of
the projections' sources), each read in a thread of its own under one deadline: a part that
does not answer is reported as such (a :class:`TimeoutError`) instead of holding the rest.

Its own module so that :mod:`workers.runtime` and :mod:`workers.status` (which imports the
runtime) both use it, the dependency going one way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any


class Parts:
    """Tasks started at any time (a task may start others: a registry's read its members'),
    waited for until one deadline, ``timeout`` seconds after this was made (``None``: no
    deadline). A task that raised yields its exception; one still going at the deadline a
    :class:`TimeoutError` naming ``timeout``, the budget of the whole look."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._results: dict[str, Any] = {}

    def start(self, key: str, task: Callable[[], Any]) -> None:
        """Run ``task`` in a daemon thread, its result kept under ``key`` (a key started
        already is not started again)."""

        def run() -> None:
            try:
                result = task()
            except BaseException as exc:  # reported to the caller, never lost
                result = exc
            with self._lock:
                self._results[key] = result

        with self._lock:
            if key in self._threads:
                return
            thread = threading.Thread(target=run, daemon=True, name=f"status-{key}")
            self._threads[key] = thread
        thread.start()

    def left(self) -> float | None:
        """Seconds until the deadline (``None``: no deadline)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def wait(self, keys: Iterable[str], *, share: float = 1.0) -> dict[str, Any]:
        """The results of ``keys`` (each started), waiting for them until the deadline, or
        only ``share`` of the time left (a part waited for by another, which needs the rest
        for its own)."""
        out: dict[str, Any] = {}
        left = self.left()
        until = None if left is None else time.monotonic() + share * left
        for key in keys:
            with self._lock:
                thread = self._threads[key]
            thread.join(None if until is None else max(0.0, until - time.monotonic()))
            with self._lock:
                if key in self._results:
                    out[key] = self._results[key]
                else:
                    out[key] = TimeoutError(f"no answer within {self.timeout:g}s")
        return out


def run_all(tasks: dict[str, Callable[[], Any]], timeout: float | None) -> dict[str, Any]:
    """Run every task in a daemon thread; a task that raised or did not finish in time yields
    its exception (a :class:`TimeoutError` for the latter)."""
    parts = Parts(timeout)
    for key, task in tasks.items():
        parts.start(key, task)
    return parts.wait(tasks)


def unreachable(exc: BaseException | None) -> bool:
    """A timeout or a connection failure anywhere in the cause chain (not a missing table)."""
    from pymongo.errors import ConnectionFailure
    from sqlalchemy.exc import OperationalError

    while exc is not None:
        if isinstance(exc, OperationalError) and "no such table" in str(exc):
            return False  # SQLite reports a missing table as an OperationalError
        if isinstance(exc, TimeoutError | OperationalError | ConnectionError | ConnectionFailure):
            return True
        exc = exc.__cause__
    return False
