"""Tenant registries listing one database: one member relays its outbox, the others are
refused.

Each registry checks its own rows (and the ``[sources.*]``); this checks the members of
every registry against each other. Two registries' members reading one outbox would take
each other's rows under two names, and one aggregate's events would be split between two
sources with no order between them (DESIGN.md invariant 3). Which one keeps it is decided
the same way in every relay process, from what they all share, and once chosen it stays:

- a member the event log has events of keeps it over one it has none of;
- among members it has events of all (a split history, left by relays that did not see
  each other's registry: logged as an error, for an operator), the one appended for most
  recently, the one relaying (``rm_log_heads.updated_at``, which appends alone set);
- among members it has no events of (a fresh start), the first by name.

A member the log has no events of does not start (and stops) while another registry's
reading is not current in this process: never read, its last read failed (it is in
back-off), or a read of it is still going after the wait. That registry may list the same
database by now, with events, and what it listed before does not show it. Members the log
has events of are checked against what it listed last, and go on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import SQLAlchemyError

from config import Settings
from config.outbox_identity import outbox_identity
from outbox.db import describe_db_error
from outbox.errors import SourceError
from outbox.schema import log_heads
from outbox.source_groups import group_of
from outbox.tenant_registry import Members, RegistryProblem, TenantRegistry, registries

logger = structlog.get_logger("readmodel.relay")

Appends = Mapping[str, datetime | None]
"""``{source: when the log last appended for it}``, for sources the log has events of."""


class EventLogUnreadable(SourceError):
    """The event log could not be read to check the registries' shared databases: the
    registry's members wait, as for an unreadable registry."""


def last_appends(engine: sa.Engine) -> dict[str, datetime | None]:
    """The sources the event log has events of, each with the time of its last append."""
    query = sa.select(log_heads.c.source, log_heads.c.updated_at).where(log_heads.c.head > 0)
    try:
        with engine.connect() as conn:
            return {str(source): at for source, at in conn.execute(query)}
    except SQLAlchemyError as exc:
        raise EventLogUnreadable(
            f"the event log cannot be read to check tenant registries' shared databases: "
            f"{describe_db_error(exc)}"
        ) from exc


def settle(
    readings: Mapping[str, Members], appends: Appends, unread: Mapping[str, str] | None = None
) -> dict[str, Members]:
    """``readings`` (by group) with every member that reads the outbox of another registry's
    member moved to its registry's problems, but the one that keeps it (see the module);
    ``unread``: the registries whose members are not known now (group -> why; never read,
    or read before and failing since): a member of another registry the log has no events
    of waits for them."""
    claims = _claims(readings)
    settings = {n: s for members in readings.values() for n, s in members.sources.items()}
    refused: dict[str, RegistryProblem] = {}
    for names in claims:
        keeper = min(names, key=lambda n: _precedence(n, appends))
        split = sorted(n for n in names if n in appends)
        for name in names:
            if name != keeper:
                refused[name] = _refusal(name, settings[name].tenant, keeper, split)
    for name in settings.keys() - refused.keys() - appends.keys() if unread else ():
        group = group_of(name) or ""
        others = {g: why for g, why in (unread or {}).items() if g != group}
        if others:
            refused[name] = _waiting(group, settings[name].tenant, others)
    out = {}
    for group, members in readings.items():
        problems = [p for name, p in sorted(refused.items()) if group_of(name) == group]
        if not problems:
            out[group] = members
            continue
        sources = {n: s for n, s in members.sources.items() if n not in refused}
        out[group] = Members(group, sources, [*members.problems, *problems])
    return out


def split_histories(readings: Mapping[str, Members], appends: Appends) -> list[list[str]]:
    """The members of different registries reading one outbox that the log has events of
    all (two or more in each list, by name): one aggregate's events may be split."""
    splits = [sorted(n for n in names if n in appends) for names in _claims(readings)]
    return [names for names in splits if len(names) > 1]


def _claims(readings: Mapping[str, Members]) -> list[list[str]]:
    """The members of more than one registry reading one outbox, per outbox."""
    claims: dict[tuple[str, ...], list[str]] = {}
    for members in readings.values():
        for name, source in members.sources.items():
            claims.setdefault(outbox_identity(source), []).append(name)
    return [names for names in claims.values() if len({group_of(n) for n in names}) > 1]


def _precedence(name: str, appends: Appends) -> tuple[bool, float, str]:
    if name not in appends:
        return (True, 0.0, name)
    at = appends[name]
    return (False, float("inf") if at is None else -at.timestamp(), name)


def _refusal(name: str, tenant: str | None, keeper: str, split: list[str]) -> RegistryProblem:
    keeper_group, _, keeper_tenant = keeper.partition(":")
    reason = (
        f"the same database and outbox table as tenant {keeper_tenant!r} of tenant registry "
        f"{keeper_group!r}, which relays it: not relayed (each tenant needs a database of its "
        f"own)"
    )
    if len(split) > 1:
        reason += (
            f"; the event log has events of both {' and '.join(split)}: one aggregate's "
            f"events may be split between them (see README, A tenant registry)"
        )
    return RegistryProblem(group_of(name) or "", tenant, reason)


def _waiting(group: str, tenant: str | None, unread: Mapping[str, str]) -> RegistryProblem:
    others = " and ".join(f"tenant registry {g!r}" for g in sorted(unread))
    reason = (
        f"waits until {others} is read: the event log has no events of this tenant, and "
        f"{'they' if len(unread) > 1 else 'it'} may list the same database (relayed already)"
    )
    return RegistryProblem(group, tenant, reason, waiting=True)


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
            members = registry.read()
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
