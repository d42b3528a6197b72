"""A relay's view of the other tenant registries of its configuration (:class:`Peers`)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import sqlalchemy as sa
import structlog

from config import Settings
from outbox import registry_reads
from outbox.keepers import last_appends
from outbox.registry_members import Members
from outbox.registry_overlaps import settle, split_histories
from outbox.registry_reads import GIVEN_UP, GIVEN_UP_ONCE, given_up_error
from outbox.tenant_registry import TenantRegistry, registries

logger = structlog.get_logger("readmodel.relay")

PEER_WAIT = 2.0
"""Seconds a running relay's refresh waits for the other registries' readings: one that
does not answer by then is read on in the background, and the refresh goes on with what
is known of it."""
_BACKOFF_MAX = 300.0  # seconds between tries of a registry that keeps failing


@dataclass(slots=True)
class _Peer:
    registry: TenantRegistry
    reading: Members | None = None
    """The newest reading (by :attr:`Members.started`): an older one, however late it
    ends, never replaces it."""
    outcome_at: float = 0.0  # when the newest outcome (reading or failure) recorded began
    error: str | None = None  # the last read's failure, while it fails
    failures: int = 0
    retry_at: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)  # the current read's end
    read_started: float = 0.0  # the current read's start
    reported: bool = False

    def __post_init__(self) -> None:
        self.done.set()


class Peers:
    """Every registry of a configuration, for a relay to check its registry's members
    against the others' (the others may be relayed by other processes, or by none).

    A peer's reading is reused for its ``refresh``; the peers are read side by side, each in
    a thread of its own, and a refresh waits for the reads it started :data:`PEER_WAIT`
    seconds at most (``relay --once``: until they end, at most ``read_bound``; a read still
    going at the next refresh is not waited for again; ``relay --once`` gives up one still
    going then). A read going past ``read_bound`` (:data:`~outbox.registry_reads.READ_BOUND`)
    is given up with a warning and ended (its connection shut down), and the registry read
    again at once on a new connection (after a back-off if the read before failed too). A
    peer that cannot be read is tried again after a back-off (twice its ``refresh``,
    doubling, at most 5 minutes), and checked against meanwhile with the members it listed
    last. Readings carry their start: an older one ending after a newer one (a registry's
    own relay reads it too) is not kept. While one's reading is not current (never read, its
    last read failed, or a read is still going after the wait), the members the log has no
    events of wait (:func:`settle`).
    """

    def __init__(
        self, settings: Settings, log_engine: sa.Engine, *, read_bound: float | None = None
    ) -> None:
        self._peers = {r.group: _Peer(r) for r in registries(settings)}
        self._lock = threading.Lock()
        self._splits: set[tuple[str, ...]] = set()  # logged
        self._log_engine = log_engine
        self._read_bound = registry_reads.READ_BOUND if read_bound is None else read_bound

    def settle(self, members: Members, wait: float | None = PEER_WAIT) -> Members:
        """``members`` (one registry's reading now) less those another registry's keep, and
        those that wait for a registry whose reading is not current; ``wait``: seconds at
        most for the other registries' readings (``None``: until their reads end, at most
        the read bound)."""
        group = members.registry
        with self._lock:
            self._succeeded(self._peers[group], members)
        others = [g for g in self._peers if g != group]
        pending = [done for g in others if (done := self._read_if_due(g)) is not None]
        deadline = time.monotonic() + (self._read_bound if wait is None else wait)
        for done in pending:
            done.wait(max(0.0, deadline - time.monotonic()))
        if wait is None:  # relay --once: a read still going is given up (no refresh follows)
            for other in others:
                self._give_up_if_going(other)
        readings = {group: members}
        unread: dict[str, str] = {}
        with self._lock:
            for other in others:
                peer = self._peers[other]
                if peer.reading is not None:  # what it listed last: keepers are kept
                    readings[other] = peer.reading
                if peer.reading is None or peer.error is not None or not peer.done.is_set():
                    unread[other] = peer.error or "its read has not ended"
        if len(readings) == 1 and not unread:
            return members
        appends = last_appends(self._log_engine)
        self._log_splits(split_histories(readings, appends))
        return settle(readings, appends, unread)[group]

    def _read_if_due(self, group: str) -> threading.Event | None:
        """Start reading ``group`` in the background unless its reading is fresh, a read is
        in flight (a refresh waited for it already; one past the read bound is given up),
        or it failed and its back-off has not passed; the read's end, or None."""
        peer = self._peers[group]
        now = time.monotonic()
        warning = None
        with self._lock:
            if not peer.done.is_set():
                if now - peer.read_started < self._read_bound:
                    return None
                warning = self._give_up(peer, now)
            fresh = peer.registry.settings.refresh.total_seconds()
            due = peer.reading is None or now - peer.reading.started >= fresh
            due = due and not (peer.failures and now < peer.retry_at)
            if due:
                peer.done, peer.read_started = threading.Event(), now
            done, registry = peer.done, peer.registry
        if warning is not None:
            logger.warning(warning[0], **warning[1])
        if not due:
            return None
        thread = threading.Thread(
            target=self._read, args=(peer, registry, now, done), name=f"peer-{group}"
        )
        thread.daemon = True
        try:
            thread.start()
        except RuntimeError as exc:  # no thread to be had: a failed read, tried after back-off
            self._failed(peer, exc, now)
            done.set()
            return None
        return done

    def _give_up_if_going(self, group: str) -> None:
        peer = self._peers[group]
        with self._lock:
            if peer.done.is_set():
                return
            warning = self._give_up(peer, time.monotonic(), once=True)
        logger.warning(warning[0], **warning[1])

    def _give_up(
        self, peer: _Peer, now: float, *, once: bool = False
    ) -> tuple[str, dict[str, str]]:
        """Give up the read in flight (lock held): ended (its socket shut down: its thread
        fails and closes it), a failed read (unless the registry was read since it began),
        the next read on a new connection, at once unless the read before failed too; the
        warning to log (``once``: ``relay --once``, no read follows and it says none)."""
        stuck = peer.registry
        stuck.abort()
        peer.registry = TenantRegistry(stuck.group, stuck.settings, stuck.others)
        peer.done = threading.Event()
        peer.done.set()  # no read in flight, as far as the refreshes are concerned
        after = f"{self._read_bound:g}s"
        retry_now = peer.failures == 0
        error = given_up_error(stuck.group, self._read_bound)
        self._note_failure(peer, error, peer.read_started)
        if retry_now:
            peer.retry_at = now
        if once:
            return GIVEN_UP_ONCE, {"registry": stuck.group, "after": after}
        return (
            GIVEN_UP,
            {
                "registry": stuck.group,
                "after": after,
                "retry_in": f"{max(0.0, peer.retry_at - now):g}s",
            },
        )

    def _read(
        self, peer: _Peer, registry: TenantRegistry, started: float, done: threading.Event
    ) -> None:
        try:
            members = registry.read(lambda: last_appends(self._log_engine))
        except Exception as exc:  # SourceError, TimeoutError, or anything: the read failed
            self._failed(peer, exc, started)
        else:
            with self._lock:
                self._succeeded(peer, members)
        finally:
            registry.close()  # read again after its refresh: no connection kept meanwhile
            done.set()

    def _succeeded(self, peer: _Peer, members: Members) -> None:
        """Record a reading (lock held), unless a newer one is known."""
        if peer.reading is None or members.started > peer.reading.started:
            peer.reading = members
        if members.started > peer.outcome_at:
            peer.outcome_at = members.started
            peer.error, peer.failures, peer.reported = None, 0, False

    def _note_failure(self, peer: _Peer, error: str, started: float) -> dict[str, str] | None:
        """Record a failed read begun at ``started`` (lock held), unless a newer outcome is
        known; what to log, the first time while it fails."""
        if started <= peer.outcome_at:
            return None
        peer.outcome_at = started
        refresh = max(peer.registry.settings.refresh.total_seconds(), 1.0)
        peer.failures += 1
        backoff = min(_BACKOFF_MAX, refresh * 2**peer.failures)
        peer.retry_at = time.monotonic() + backoff
        peer.error = error
        if peer.reported:
            return None
        peer.reported = True
        return {"retry_in": f"{backoff:g}s", "known": "yes" if peer.reading else ""}

    def _failed(self, peer: _Peer, exc: Exception, started: float) -> None:
        with self._lock:
            report = self._note_failure(peer, str(exc), started)
        if report is None:
            return
        logger.warning(
            "tenant registry unreadable; the other registries' tenants the event log has "
            "events of are checked against the members it listed last, those it has none of "
            "wait until it is read"
            if report["known"]
            else "tenant registry unreadable and never read: the other registries' tenants "
            "the event log has no events of wait until it is read",
            registry=peer.registry.group,
            error=str(exc),
            retry_in=report["retry_in"],
        )

    def _log_splits(self, splits: list[list[str]]) -> None:
        for names in splits:
            with self._lock:
                if tuple(names) in self._splits:
                    continue
                self._splits.add(tuple(names))
            logger.error(
                "one database relayed under two names (see README, A tenant registry); "
                "the one appended for most recently keeps it",
                split=f"the event log has events of both {' and '.join(names)}",
            )
