"""The read stores' schema revision for ``readmodel metrics``, which must not crash-loop while
a store is down: a database outage is what Prometheus most needs to see
(``readmodel_store_up 0``).

A store that cannot be reached when the server starts, or does not answer within the
server's ``--timeout`` (it hangs), is checked again, in a thread, every few seconds and at
each scrape until it answers; one that answers at another schema revision than this
readmodel's stops the server, which exits 2 as it would have at start. So does a projection
subscribed to a source nothing feeds, once the log (asked whether it has that source's
events) answers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import structlog

from config import Settings

logger = structlog.get_logger("readmodel.metrics")


def cannot_reach(exc: BaseException) -> bool:
    """Whether ``exc`` means a read store could not be reached (not that it refused)."""
    from workers.cli_support import _unreachable
    from workers.parts import unreachable

    return unreachable(exc) or _unreachable(exc)


_PENDING = object()  # the first check has not answered yet


class SchemaGate:
    """Checks the read stores' schema revision, then the projections' sources (``sources``:
    :func:`workers.runtime.check_subscriptions`), until they answer (:meth:`check`). A wrong
    revision or a source nothing feeds found after the start is kept in :attr:`problem`
    and sets ``stop``."""

    def __init__(
        self,
        settings: Settings,
        config: Path | None,
        stop: threading.Event,
        interval: float = 5.0,
        sources: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.stop = stop
        self.interval = interval
        self.sources = sources
        self.problem: str | None = None
        self._confirmed = False
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._first: object = _PENDING
        self._answered = threading.Event()
        self._late = False

    def start(self, wait: float | None = None) -> None:
        """Check now, in a thread, waiting for it ``wait`` seconds (``None``: until it
        answers): what it finds in time is raised as at any command's start (unless a store
        cannot be reached); one that does not answer in time (a store that hangs) is left to
        the thread, which settles it as a check after the start does. Until a check answers,
        the thread checks again every ``interval`` seconds, or at once when a scrape asks
        (:meth:`check`)."""
        threading.Thread(target=self._watch, name="schema-watch", daemon=True).start()
        if not self._answered.wait(wait):
            with self._lock:
                self._late = self._first is _PENDING
            if self._late:
                logger.warning(
                    "metrics: the read store does not answer; serving readmodel_store_up 0 "
                    "and checking its schema revision and the projections' sources once it "
                    "answers",
                    waited=wait,
                )
                return
        found = self._first
        if found is None:
            return
        if isinstance(found, BaseException):
            if not cannot_reach(found):
                raise found
            _log_unreachable(found, at_start=True)
            return
        from workers.cli_support import EXIT_CONFIG, fail

        raise fail(str(found), EXIT_CONFIG)

    def check(self) -> bool:
        """True once every store answered at this readmodel's revision; until then, has
        the thread check again now (a scrape does not wait for a store that may take its
        driver's whole timeout to fail)."""
        if not self._confirmed:
            self._wake.set()
        return self._confirmed

    def _watch(self) -> None:
        found = self._attempt()
        with self._lock:
            self._first = found
            late = self._late
        self._answered.set()
        if late:
            if self._settle(found):
                return
        elif not isinstance(found, BaseException) or not cannot_reach(found):
            return  # start() says what it found
        while not self.stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self.stop.is_set() or self._settle(self._attempt()):
                return

    def _attempt(self) -> str | BaseException | None:
        """One check: ``None`` when every store is at this readmodel's revision and every
        projection's source is fed, else the problem (a store's remedy), or what it raised."""
        from workers.cli_support import schema_problem

        try:
            problem = schema_problem(self.settings, self.config)
            if problem is None and self.sources is not None:
                self.sources()
        except Exception as exc:
            return exc
        if problem is None:
            self._confirmed = True
        return problem

    def _settle(self, found: str | BaseException | None) -> bool:
        """A check's outcome after the start: whether checking is over (answered, or a
        problem that stops the server)."""
        from config import ConfigError

        if isinstance(found, ConfigError):  # a projection's source nothing feeds
            found = str(found)
        if isinstance(found, BaseException):
            _log_unreachable(found, at_start=False)
            return False
        if found is not None:
            self.problem = found
            logger.error("metrics: stopping: a read store or a projection is refused", error=found)
            self.stop.set()
            return True
        logger.info("metrics: the read store answers at this readmodel's revision")
        return True


def _log_unreachable(exc: BaseException, at_start: bool) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from outbox.db import describe_db_error

    error = describe_db_error(exc) if isinstance(exc, SQLAlchemyError) else str(exc)
    if at_start:
        logger.warning(
            "metrics: the read store cannot be reached; serving readmodel_store_up 0 and "
            "checking its schema revision once it answers",
            error=error,
        )
    else:
        logger.debug("metrics: cannot check the read store's schema revision yet", error=error)
