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
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import structlog

from config import RelaySettings, SourceSettings
from outbox import registry_reads
from outbox.db import redact_dsn
from outbox.errors import SourceError
from outbox.keepers import EventLogUnreadable, last_appends
from outbox.log import EventLog
from outbox.log_rules import RuleOrigin
from outbox.registry_members import Members
from outbox.registry_peers import PEER_WAIT, Peers
from outbox.registry_reads import ReadStopped, read_within
from outbox.source_relay import RelayHooks, RelayTotals, SourceRelay, drain_source
from outbox.sources import open_source
from outbox.tenant_registry import TenantRegistry

logger = structlog.get_logger("readmodel.relay")

_RELEASE_WAIT = 30.0  # seconds for a removed member's relay to finish its batch
_RELEASE_GRACE = 2.0  # seconds a refresh waits for released members before going on
_DRAIN_THREADS = 8  # members drained at once by relay --once


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
        only: Iterable[str] | None = None,
        *,
        origin: RuleOrigin | None = None,
        peers: Peers | None = None,
        read_bound: float | None = None,
    ) -> None:
        self.registry = registry
        self.read_bound = registry_reads.READ_BOUND if read_bound is None else read_bound
        """Seconds the registry's read may take: one stuck past it (a TCP stall mid-query)
        is given up with a warning and ended; the registry is unreadable until the next."""
        self.peers = peers
        """The configuration's other registries: a member reading the outbox of one of their
        members is refused, unless it is the one that keeps it."""
        self.origin = origin
        """Where the members' ``binary_ids`` is set (``[tenants.NAME.source]``)."""
        self.only = None if only is None else set(only)
        """Relay these members only (``relay --source pos:acme``); ``None``: every one."""
        self.log = log
        self.settings = settings
        self.hooks = list(hooks)
        self._members: dict[str, _Member] = {}
        self._reported: set[str] = set()
        self._listed: list[str] = []  # the last read's members, before ``only``
        self._start_errors: dict[str, str] = {}  # member -> why it could not start (logged once)
        self._lock = threading.Lock()
        self._stop: threading.Event | None = None  # run()'s: a read in flight ends when set

    @property
    def group(self) -> str:
        return self.registry.group

    @property
    def members(self) -> list[str]:
        """The member sources being relayed now."""
        with self._lock:
            return sorted(self._members)

    def read(self, peer_wait: float | None = PEER_WAIT) -> Members:
        """The registry's members now, each bad row logged once (while it stays bad);
        ``peer_wait``: seconds at most for the other registries' readings (``None``: until
        their reads end, at most the peers' read bound). Raises :class:`SourceError` when
        the registry cannot be read, or its read is given up (past :attr:`read_bound`)."""
        once = peer_wait is None  # relay --once: no refresh reads it again
        members = read_within(
            self.registry,
            lambda: last_appends(self.log.engine),
            self.read_bound,
            self._stop,
            retry_in=None if once else "the next refresh",
        )
        if self.peers is not None:
            members = self.peers.settle(members, peer_wait)
        self._listed = sorted(members.sources)
        if self.only is not None:
            members = replace(
                members,
                sources={n: s for n, s in members.sources.items() if n in self.only},
                problems=[p for p in members.problems if p.source in self.only],
            )
        problems = {str(p): p for p in members.problems}
        for text in sorted(problems.keys() - self._reported):
            event = (
                "tenant source waits" if problems[text].waiting else "tenant registry row skipped"
            )
            logger.warning(event, registry=self.group, problem=text)
        self._reported = set(problems)
        return members

    def drain(self) -> dict[str, RelayTotals]:
        """Relay every member until its outbox is empty (``readmodel relay --once``)."""
        try:
            members = self.read(peer_wait=None)  # once: what every registry lists now
        except SourceError as exc:
            return {self.group: RelayTotals(errors=[str(exc)], unlisted=True)}
        finally:
            self.registry.close()  # read once; a one-shot command keeps no connection open
        results: dict[str, RelayTotals] = {}
        for problem in members.problems:  # reported; the other members are relayed
            totals = results.setdefault(problem.source, RelayTotals(unlisted=True, refused=True))
            totals.add_error(str(problem))
            # a bad row or a conflict: the configuration's to fix; one that waits is not
            totals.refused = totals.refused and not problem.waiting
        for name in sorted((self.only or set()) - set(members.sources) - set(results)):
            listed = ", ".join(self._listed) or "none"
            error = f"tenant registry {self.group!r} lists no {name!r} (it lists: {listed})"
            # a name given on the command line: a usage error (2), not an unreachable source
            results[name] = RelayTotals(errors=[error], unlisted=True, refused=True)
        # Each member on its own thread: one tenant database that hangs (bounded by the
        # connect and statement timeouts) holds up no other tenant's.
        names = list(members.sources)
        with ThreadPoolExecutor(max(1, min(_DRAIN_THREADS, len(names)))) as pool:
            drained = pool.map(lambda n: self._drain_member(n, members.sources[n]), names)
            results.update(zip(names, drained, strict=True))
        return results

    def _drain_member(self, name: str, settings: SourceSettings) -> RelayTotals:
        try:  # a DSN that cannot be opened is that member's error; the others go on
            relay = self._relay(name, settings)
        except SourceError as exc:
            return RelayTotals(errors=[str(exc)])
        return drain_source(relay)

    def _relay(self, name: str, settings: SourceSettings) -> SourceRelay:
        source = open_source(name, settings)
        return SourceRelay(source, self.log, self.settings, self.hooks, origin=self.origin)

    def run(self, stop: threading.Event) -> None:
        """Relay the members until ``stop`` is set, reading the registry every ``refresh``."""
        refresh = self.registry.settings.refresh.total_seconds()
        self._stop = stop
        try:
            while not stop.is_set():
                try:
                    self.refresh()
                except Exception:  # a refresh that went wrong: the members keep running
                    logger.exception("tenant registry refresh failed", registry=self.group)
                stop.wait(refresh)
        finally:
            self._stop = None
            self.stop_all()
            self.registry.close()

    def refresh(self) -> None:
        """Read the registry and start, release or restart member relays to match it."""
        try:
            members = self.read()
        except ReadStopped:  # the process is stopping: the members stop next
            return
        except SourceError as exc:
            logger.warning(
                "event log unreadable while checking the tenant registries' shared databases; "
                "relaying the members known before"
                if isinstance(exc, EventLogUnreadable)
                else "tenant registry unreadable; relaying the members known before",
                registry=self.group,
                members=len(self._members),
                error=str(exc),
            )
            return
        wanted = members.sources
        refused = {p.source for p in members.problems}
        releases = [
            (n, "tenant's row refused" if n in refused else "tenant removed from the registry")
            for n in set(self._members) - set(wanted)
        ]
        releases += [
            (n, "tenant's settings changed in the registry")
            for n, s in wanted.items()
            if n in self._members and self._members[n].settings != s
        ]
        self._release(sorted(releases))
        for name, settings in sorted(wanted.items()):
            if name not in self._members:
                self._start(name, settings)
        for name in set(self._start_errors) - set(wanted):
            del self._start_errors[name]

    def _start(self, name: str, settings: SourceSettings) -> None:
        """Start relaying one member; one that cannot be opened is reported (once while its
        error stays the same) and tried again at the next refresh."""
        try:
            relay = self._relay(name, settings)
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
        url = redact_dsn(settings.url, location=True)
        logger.info("relaying tenant source", source=name, url=url)

    def _release(self, releases: list[tuple[str, str]]) -> None:
        """Stop the relays of ``(member, why)``: each finishes its batch in hand and lets its
        leader lock go. A relay still busy after a short grace (a tenant database that does
        not answer) is left to finish in the background: the refresh goes on (a new tenant
        starts at once), and the leader lock keeps a member's new relay from overlapping."""
        with self._lock:
            released = [(self._members.pop(name), name, why) for name, why in releases]
        for member, _, _ in released:
            member.stop.set()
        deadline = time.monotonic() + _RELEASE_GRACE
        for member, name, why in released:
            member.thread.join(max(0.0, deadline - time.monotonic()))
            if not member.thread.is_alive():
                logger.info("stopped relaying tenant source", source=name, reason=why)
                continue
            logger.warning("tenant source still stopping; released in the background", source=name)
            threading.Thread(
                target=_finish_release,
                args=(member, name, why),
                name=f"release-{name}",
                daemon=True,
            ).start()

    def stop_all(self) -> None:
        with self._lock:
            members = list(self._members.values())
            self._members.clear()
        for member in members:
            member.stop.set()
        deadline = time.monotonic() + _RELEASE_WAIT  # in all: hung members wait together
        for member in members:
            member.thread.join(max(0.0, deadline - time.monotonic()))


def _finish_release(member: _Member, name: str, why: str) -> None:
    member.thread.join(_RELEASE_WAIT)
    if member.thread.is_alive():
        logger.warning("tenant source did not stop", source=name, reason=why)
    else:
        logger.info("stopped relaying tenant source", source=name, reason=why)
