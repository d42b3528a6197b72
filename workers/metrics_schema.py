"""The read stores' schema revision for ``readmodel metrics``, which must not crash-loop while
a store is down: a database outage is what Prometheus most needs to see
(``readmodel_store_up 0``).

A store that cannot be reached when the server starts is checked again, in a thread, every
few seconds and at each scrape until it answers; one that answers at another schema
revision than this readmodel's stops the server, which exits 2 as it would have at start.
"""

from __future__ import annotations

import threading
from pathlib import Path

import structlog

from config import Settings

logger = structlog.get_logger("readmodel.metrics")


def cannot_reach(exc: BaseException) -> bool:
    """Whether ``exc`` means a read store could not be reached (not that it refused)."""
    from workers.cli_support import _unreachable
    from workers.parts import unreachable

    return unreachable(exc) or _unreachable(exc)


class SchemaGate:
    """Checks the read stores' schema revision until they answer (:meth:`check`). A wrong
    revision found after the start is kept in :attr:`problem` and sets ``stop``."""

    def __init__(
        self,
        settings: Settings,
        config: Path | None,
        stop: threading.Event,
        interval: float = 5.0,
    ) -> None:
        self.settings = settings
        self.config = config
        self.stop = stop
        self.interval = interval
        self.problem: str | None = None
        self._confirmed = False
        self._wake = threading.Event()

    def start(self) -> None:
        """Check now (raising what the first check raises, unless a store cannot be
        reached), then in a thread every ``interval`` seconds, or at once when a scrape
        asks (:meth:`check`), until one check answers."""
        if self._check(at_start=True):
            return
        threading.Thread(target=self._watch, name="schema-watch", daemon=True).start()

    def check(self) -> bool:
        """True once every store answered at this readmodel's revision; until then, has
        the thread check again now (a scrape does not wait for a store that may take its
        driver's whole timeout to fail)."""
        if not self._confirmed:
            self._wake.set()
        return self._confirmed

    def _watch(self) -> None:
        while not self.stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self.stop.is_set() or self._check(at_start=False) or self.problem is not None:
                return

    def _check(self, *, at_start: bool) -> bool:
        from workers.cli_support import schema_problem

        try:
            problem = schema_problem(self.settings, self.config)
        except Exception as exc:
            if at_start and not cannot_reach(exc):
                raise
            _log_unreachable(exc, at_start)
            return False
        if at_start and problem is not None:
            from workers.cli_support import EXIT_CONFIG, fail

            raise fail(problem, EXIT_CONFIG)
        if problem is not None:
            self.problem = problem
            logger.error("metrics: the read store is at another schema revision", error=problem)
            self.stop.set()
            return False
        if not at_start:
            logger.info("metrics: the read store answers at this readmodel's revision")
        self._confirmed = True
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
