"""Relaying the member sources of a tenant registry, as its rows come and go.

The relay process reads each registry when it starts and every ``refresh``: a new tenant's
database starts being relayed at once, a removed one is released (its leader lock let go,
its connections closed), a changed DSN (a rotated password) is relayed again with the new
one. A registry that cannot be read keeps the members known before, with a warning. The
relay is the one process that reads registries (and ``status``/``health``, to report):
workers and the sweeper find a group's members in the event log.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from config import RelaySettings, SourceSettings
from outbox.errors import SourceError
from outbox.log import EventLog
from outbox.relay import RelayHooks, RelayTotals, SourceRelay, drain_source
from outbox.sources import open_source
from outbox.tenant_registry import Members, TenantRegistry

logger = structlog.get_logger("readmodel.relay")

_RELEASE_WAIT = 30.0  # seconds for a removed member's relay to finish its batch


@dataclass(slots=True)
class _Member:
    settings: SourceSettings
    relay: SourceRelay
    stop: threading.Event
    thread: threading.Thread


class TenantRelays:
    """The relays of one registry's member sources."""

    def __init__(
        self,
        registry: TenantRegistry,
        log: EventLog,
        settings: RelaySettings,
        hooks: Iterable[RelayHooks] = (),
    ) -> None:
        self.registry = registry
        self.log = log
        self.settings = settings
        self.hooks = list(hooks)
        self._members: dict[str, _Member] = {}
        self._reported: set[str] = set()
        self._start_errors: dict[str, str] = {}  # member -> why it could not start (logged once)
        self._lock = threading.Lock()

    @property
    def group(self) -> str:
        return self.registry.group

    @property
    def members(self) -> list[str]:
        """The member sources being relayed now."""
        with self._lock:
            return sorted(self._members)

    def read(self) -> Members:
        """The registry's members now, each bad row logged once (while it stays bad).
        Raises :class:`SourceError` when the registry cannot be read."""
        members = self.registry.read()
        problems = {str(p) for p in members.problems}
        for problem in sorted(problems - self._reported):
            logger.warning("tenant registry row skipped", registry=self.group, problem=problem)
        self._reported = problems
        return members

    def drain(self) -> dict[str, RelayTotals]:
        """Relay every member until its outbox is empty (``readmodel relay --once``)."""
        try:
            members = self.read()
        except SourceError as exc:
            return {self.group: RelayTotals(errors=[str(exc)])}
        finally:
            self.registry.close()  # read once; a one-shot command keeps no connection open
        results: dict[str, RelayTotals] = {}
        for problem in members.problems:  # reported; the other members are relayed
            results.setdefault(problem.source, RelayTotals()).errors.append(str(problem))
        for name, settings in members.sources.items():
            try:  # a DSN that cannot be opened is that member's error; the others go on
                relay = SourceRelay(
                    open_source(name, settings), self.log, self.settings, self.hooks
                )
            except SourceError as exc:
                results[name] = RelayTotals(errors=[str(exc)])
                continue
            results[name] = drain_source(relay)
        return results

    def run(self, stop: threading.Event) -> None:
        """Relay the members until ``stop`` is set, reading the registry every ``refresh``."""
        refresh = self.registry.settings.refresh.total_seconds()
        try:
            while not stop.is_set():
                try:
                    self.refresh()
                except Exception:  # a refresh that went wrong: the members keep running
                    logger.exception("tenant registry refresh failed", registry=self.group)
                stop.wait(refresh)
        finally:
            self.stop_all()
            self.registry.close()

    def refresh(self) -> None:
        """Read the registry and start, release or restart member relays to match it."""
        try:
            members = self.read()
        except SourceError as exc:
            logger.warning(
                "tenant registry unreadable; relaying the members known before",
                registry=self.group,
                members=len(self._members),
                error=str(exc),
            )
            return
        wanted = members.sources
        for name in sorted(set(self._members) - set(wanted)):
            self._release(name, "tenant removed from the registry")
        for name, settings in sorted(wanted.items()):
            running = self._members.get(name)
            if running is not None and running.settings != settings:
                self._release(name, "tenant's settings changed in the registry")
                running = None
            if running is None:
                self._start(name, settings)
        for name in set(self._start_errors) - set(wanted):
            del self._start_errors[name]

    def _start(self, name: str, settings: SourceSettings) -> None:
        """Start relaying one member; one that cannot be opened is reported (once while its
        error stays the same) and tried again at the next refresh."""
        try:
            relay = SourceRelay(open_source(name, settings), self.log, self.settings, self.hooks)
        except SourceError as exc:
            if self._start_errors.get(name) != str(exc):
                logger.warning("tenant source cannot be relayed", source=name, error=str(exc))
            self._start_errors[name] = str(exc)
            return
        self._start_errors.pop(name, None)
        stop = threading.Event()
        thread = threading.Thread(target=relay.run, args=(stop,), name=f"relay-{name}", daemon=True)
        with self._lock:
            self._members[name] = _Member(settings, relay, stop, thread)
        thread.start()
        logger.info("relaying tenant source", source=name, url=relay.source.display_url)

    def _release(self, name: str, why: str) -> None:
        with self._lock:
            member = self._members.pop(name)
        member.stop.set()
        member.thread.join(_RELEASE_WAIT)
        logger.info("stopped relaying tenant source", source=name, reason=why)

    def stop_all(self) -> None:
        with self._lock:
            members = list(self._members.values())
            self._members.clear()
        for member in members:
            member.stop.set()
        for member in members:
            member.thread.join(_RELEASE_WAIT)
