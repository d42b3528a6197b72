"""The checks ``status`` and ``health`` make besides their report, each asked in a thread
while the report is read, all within the one ``--timeout``: a log store that does not
answer costs the command that timeout once, not once per check and once more for the
report. A store that cannot be reached is left to the report (it says what it can read
without it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from config import Settings
from workers.cli_support import guarded, schema_problem
from workers.parts import unreachable


class _Background:
    """``func()`` run in a daemon thread: its result, or its exception, once ``done``."""

    def __init__(self, name: str, func: Callable[[], Any]) -> None:
        self.found: Any = None
        self.done = threading.Event()
        self.settled = False

        def run() -> None:
            try:
                self.found = func()
            except BaseException as exc:  # said by Checks.settle(), never lost
                self.found = exc
            finally:
                self.done.set()

        threading.Thread(target=run, name=name, daemon=True).start()


class Checks:
    """Whether every read store is at this readmodel's schema revision (``outdated`` is
    called with a store's problem, and exits) and, once the runtime is built
    (:meth:`subscriptions`), whether every projection's source is fed: one only the log may
    know is asked of the log, which a store down leaves unrefused."""

    def __init__(
        self,
        settings: Settings,
        config: Path | None,
        timeout: float,
        outdated: Callable[[dict[str, str]], NoReturn],
    ) -> None:
        from outbox.migrate import any_store_absent

        self._deadline = time.monotonic() + timeout
        self._outdated = outdated
        self._schema = _Background("status-schema", lambda: schema_problem(settings, config))
        self._sources: _Background | None = None
        if guarded(any_store_absent, settings):  # reading one would create it: check first
            self._settle(self._schema)

    def subscriptions(self, runtime: Any) -> None:
        """Start the check of the projections' sources (:func:`check_subscriptions`)."""
        from workers.runtime import check_subscriptions

        self._sources = _Background("status-sources", lambda: check_subscriptions(runtime))

    def after(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``func(...)``; when it raises, the checks have their say first (an outdated
        store explains a missing table better than the error of reading it)."""
        try:
            return func(*args, **kwargs)
        except Exception:
            self.settle()
            raise

    def settle(self) -> None:
        """Wait for the checks (until the deadline); exit on a store found outdated, a
        projection's source nothing feeds, or an error that is not the store being
        unreachable, as any command does for it."""
        self._settle(self._schema)
        if self._sources is not None:
            self._settle(self._sources)

    def _settle(self, check: _Background) -> None:
        if check.settled:
            return
        check.settled = True
        if not check.done.wait(max(0.0, self._deadline - time.monotonic())):
            return  # the store that does not answer is in the report
        found = check.found
        if isinstance(found, BaseException):
            if unreachable(found):
                return
            error = found

            def reraise() -> None:
                raise error

            guarded(reraise)  # the message and exit code any command gives for it
            raise found
        if check is self._schema and found is not None:
            self._outdated({"subject": "read store", "message": found})
