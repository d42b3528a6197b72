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

_PENDING = object()  # no result yet


class _Run:
    """One part's task in a daemon thread, and its result (its exception) once it ends."""

    def __init__(self, key: str, task: Callable[[], Any]) -> None:
        self.result: Any = _PENDING

        def run() -> None:
            try:
                result = task()
            except BaseException as exc:  # reported to the caller, never lost
                result = exc
            self.result = result

        self.thread = threading.Thread(target=run, daemon=True, name=f"status-{key}")

    def done(self) -> bool:
        return self.result is not _PENDING


class Running:
    """The parts of earlier looks still going past their deadline (a store that hangs),
    kept for the next look of the same process (a metrics scrape), which waits for such a
    part instead of starting it again: scrapes during a hang leave one thread, and one
    connection, per part, not one per scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}

    def start(self, key: str, task: Callable[[], Any]) -> _Run:
        """The run of ``key`` still going, else ``task`` started as it."""
        with self._lock:
            run = self._runs.get(key)
            if run is None or run.done():
                run = self._runs[key] = _Run(key, task)
                run.thread.start()
            for gone in [k for k, r in self._runs.items() if r.done() and r is not run]:
                del self._runs[gone]  # ended: the next look starts it afresh
            return run


class Parts:
    """Tasks started at any time (a task may start others: a registry's read its members'),
    waited for until one deadline, ``timeout`` seconds after this was made (``None``: no
    deadline). A task that raised yields its exception; one still going at the deadline a
    :class:`TimeoutError` naming ``timeout``, the budget of the whole look. With
    ``running``, a part an earlier look left going is waited for, not started again."""

    def __init__(self, timeout: float | None, running: Running | None = None) -> None:
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self._running = running
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}

    def start(self, key: str, task: Callable[[], Any], *, shared: bool = True) -> None:
        """Run ``task`` in a daemon thread, its result kept under ``key`` (a key started
        already is not started again). Not ``shared``: never one left by an earlier look
        (a task that belongs to this one, as a registry's read that starts its members)."""
        with self._lock:
            if key in self._runs:
                return
            if shared and self._running is not None:
                self._runs[key] = self._running.start(key, task)
                return
            run = self._runs[key] = _Run(key, task)
        run.thread.start()

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
                run = self._runs[key]
            run.thread.join(None if until is None else max(0.0, until - time.monotonic()))
            if run.done():
                out[key] = run.result
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
