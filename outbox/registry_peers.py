"""A relay's view of the other tenant registries of its configuration (:class:`Peers`)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import sqlalchemy as sa
import structlog

from config import Settings
from outbox.keepers import last_appends
from outbox.registry_overlaps import settle, split_histories
from outbox.tenant_registry import Members, TenantRegistry, registries

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
    taken_at: float = 0.0
    error: str | None = None  # the last read's failure, while it fails
    failures: int = 0
    retry_at: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)  # no read in flight
    reported: bool = False

    def __post_init__(self) -> None:
        self.done.set()


class Peers:
    """Every registry of a configuration, for a relay to check its registry's members
    against the others' (the others may be relayed by other processes, or by none).

    A peer's reading is reused for its ``refresh``; the peers are read side by side, each in
    a thread of its own, and a refresh waits for the reads it started :data:`PEER_WAIT`
    seconds at most (``relay --once``: until they end, bounded by the registry's timeouts;
    a read still going at the next refresh is not waited for again). A peer
    that cannot be read is tried again after a back-off (twice its ``refresh``, doubling,
    at most 5 minutes), and checked against meanwhile with the members it listed last.
    While one's reading is not current (never read, its last read failed, or a read is
    still going after the wait), the members the log has no events of wait (:func:`settle`).
    """

    def __init__(self, settings: Settings, log_engine: sa.Engine) -> None:
        self._peers = {r.group: _Peer(r) for r in registries(settings)}
        self._lock = threading.Lock()
        self._splits: set[tuple[str, ...]] = set()  # logged
        self._log_engine = log_engine

    def settle(self, members: Members, wait: float | None = PEER_WAIT) -> Members:
        """``members`` (one registry's reading now) less those another registry's keep, and
        those that wait for a registry whose reading is not current; ``wait``: seconds at
        most for the other registries' readings (``None``: until their reads end)."""
        group = members.registry
        with self._lock:
            own = self._peers[group]
            own.reading, own.taken_at = members, time.monotonic()
            own.error, own.failures, own.reported = None, 0, False
        others = [g for g in self._peers if g != group]
        pending = [done for g in others if (done := self._read_if_due(g)) is not None]
        deadline = None if wait is None else time.monotonic() + wait
        for done in pending:
            done.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
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
        in flight (a refresh waited for it already), or it failed and its back-off has not
        passed; the read's end, or None."""
        peer = self._peers[group]
        now = time.monotonic()
        with self._lock:
            if not peer.done.is_set():
                return None
            fresh = peer.registry.settings.refresh.total_seconds()
            if peer.reading is not None and now - peer.taken_at < fresh:
                return None
            if peer.failures and now < peer.retry_at:
                return None
            peer.done.clear()
        thread = threading.Thread(target=self._read, args=(peer,), name=f"peer-{group}")
        thread.daemon = True
        try:
            thread.start()
        except RuntimeError as exc:  # no thread to be had: a failed read, tried after back-off
            self._failed(peer, exc)
            peer.done.set()
            return None
        return peer.done

    def _read(self, peer: _Peer) -> None:
        registry = peer.registry
        try:
            members = registry.read(lambda: last_appends(self._log_engine))
        except Exception as exc:  # SourceError, TimeoutError, or anything: the read failed
            self._failed(peer, exc)
        else:
            with self._lock:
                peer.reading, peer.taken_at = members, time.monotonic()
                peer.error, peer.failures, peer.reported = None, 0, False
        finally:
            registry.close()  # read again after its refresh: no connection kept meanwhile
            peer.done.set()

    def _failed(self, peer: _Peer, exc: Exception) -> None:
        refresh = max(peer.registry.settings.refresh.total_seconds(), 1.0)
        with self._lock:
            peer.failures += 1
            backoff = min(_BACKOFF_MAX, refresh * 2**peer.failures)
            peer.retry_at = time.monotonic() + backoff
            peer.error = str(exc)
            if peer.reported:
                return
            peer.reported = True
            known = peer.reading is not None
        logger.warning(
            "tenant registry unreadable; the other registries' tenants the event log has "
            "events of are checked against the members it listed last, those it has none of "
            "wait until it is read"
            if known
            else "tenant registry unreadable and never read: the other registries' tenants "
            "the event log has no events of wait until it is read",
            registry=peer.registry.group,
            error=str(exc),
            retry_in=f"{backoff:g}s",
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
