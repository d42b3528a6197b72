"""One picture of the pipeline for ``status``, ``health`` and metrics: sources, projections,
broker queue.

Each part is read in its own thread under one deadline, so a source or broker that does
not answer is reported as such instead of hanging a container probe; so are the projections
of each read store, so a store that does not answer costs only its own projections' figures.
The log's store that does not answer costs every figure read from the log (log heads,
parked outbox rows, every projection's lag): the sources' and the broker's are still given.
A tenant registry's members are asked as soon as every registry has listed its own (half the
time left at most), while the log is asked which member keeps a database two registries
list: a log that does not answer costs them no time. Those sharing a database with another
registry's member are asked once the log has said which keeps it, and only that one.
The report's shape is :mod:`workers.status_report`; what ``health`` makes of it,
:mod:`workers.health`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from config import SourceSettings
from outbox.db import describe_db_error, redact_dsn
from outbox.errors import ReadmodelError, read_store_at
from outbox.keepers import Appends, last_appends
from outbox.log import EventLog
from outbox.log_rules import recorded_rules
from outbox.registry_members import Members
from outbox.registry_overlaps import shared_members
from outbox.source_list import list_sources
from outbox.status import SourceStatus, source_status, unlisted_status, with_rules
from outbox.tenant_registry import TenantRegistry, registries
from projections.status import ProjectionStatus, projection_statuses
from workers.overdue_board import Overdue, overdue_handlers
from workers.parts import Parts, Running, unreachable
from workers.queues import QueueDepth, broker_kind, queue_depth
from workers.removed_members import (
    member_groups,
    removed_members,
    removed_statuses,
    without_idle,
)
from workers.runtime import Runtime
from workers.status_report import Report, StoreStatus

_APPENDS = " appends"  # not a group name (no spaces in those)


def collect(
    runtime: Runtime,
    *,
    timeout: float | None = None,
    overdue: bool = True,
    running: Running | None = None,
) -> Report:
    """Read everything at once (each part within ``timeout`` seconds, when given); a part
    that does not answer is reported as such. Raises :class:`ReadmodelError` when a read
    store answers with an error (a missing table). Without ``overdue`` (the metrics
    exporter: its gauge comes from the workers' own files) the handlers past
    ``engine.handler_timeout`` are not read from the broker's Redis, and left unknown.
    With ``running`` (kept across scrapes, or status --watch rounds), a part an
    earlier call left going is not started again (:class:`Running`)."""
    settings = runtime.settings
    log = runtime.log
    parts = Parts(timeout, running)
    tenant_registries = registries(settings)

    def source_part(name: str, member: SourceSettings) -> None:
        parts.start(f"source:{name}", partial(source_status, name, settings, 0, 0, member))

    appends = _Appends(parts, log)
    listings = _Listings(parts, [r.group for r in tenant_registries])

    def read(registry: TenantRegistry) -> Members:
        members = listings.read(registry, appends)
        for name, member in listings.unshared(registry.group, members).items():
            source_part(name, member)  # asked now: until the deadline, not the time left
        return members  # once the log says which member keeps a shared database

    for registry in tenant_registries:
        parts.start(registry.group, partial(read, registry), shared=False)  # aborted below
    if len(tenant_registries) > 1:  # which of two registries' members keeps a shared outbox
        appends.start()
    for name, member in settings.sources.items():
        source_part(name, member)
    parts.start("store", partial(_log_figures, log))
    held = _projections_by_store(runtime)
    for store_name, held_names in held.items():  # one store down costs only its own figures
        parts.start(
            f"projections:{store_name}", partial(projection_statuses, runtime.engine, held_names)
        )
    pending_check = timeout or 5.0
    parts.start("broker", partial(queue_depth, settings.broker, timeout=pending_check))
    overdue_read = overdue and broker_kind(settings.broker) == "redis"
    if overdue_read:
        parts.start("overdue", partial(overdue_handlers, settings.broker, timeout=pending_check))

    readings: dict[str, Any] = {}
    try:
        readings = parts.wait(r.group for r in tenant_registries)
    finally:
        for registry in tenant_registries:
            if isinstance(readings.get(registry.group), TimeoutError):
                registry.abort()  # still going (a stall): ended, not left to a thread
            registry.close()
    logged = parts.wait([_APPENDS])[_APPENDS] if len(tenant_registries) > 1 else None
    if isinstance(logged, BaseException):  # the store part reports the store's failure
        logged = None
    listed = list_sources(settings, readings, logged)
    for name, member in listed.sources.items():
        source_part(name, member)  # started already, unless listed otherwise than read
    names = [*listed.sources, *(u.source for u in listed.unlisted)]
    readable = [g for g, r in readings.items() if not isinstance(r, BaseException)]
    groups = member_groups(settings.sources, readable)
    keys = ["store", *(f"projections:{s}" for s in held), "broker"]
    keys += [f"source:{name}" for name in listed.sources]
    results = parts.wait([*keys, *(["overdue"] if overdue_read else [])])
    store = results["store"]
    if not isinstance(store, BaseException):
        heads, counts, rules = store
        removed = removed_members(heads, groups, names)
        parked = {name: counts.get(name, 0) for name in [*names, *removed]}
        store = heads, parked, rules, removed
    if isinstance(store, BaseException):
        detail = str(store) if isinstance(store, ReadmodelError | TimeoutError) else None
        if not unreachable(store):
            message = f"read store: {detail or describe_db_error(store)}"
            raise ReadmodelError(message) from store
        heads, parked, rules, removed = {}, {}, {}, set()
        projections, stores = [], _without_log(runtime, held, detail or describe_db_error(store))
    else:
        heads, parked, rules, removed = store
        projections, stores = _projections(runtime, held, results)
    logged = not isinstance(store, BaseException)

    def head(name: str) -> int | None:
        return heads.get(name, 0) if logged else None

    sources = [
        _source(name, member, results[f"source:{name}"], head(name), parked.get(name))
        for name, member in listed.sources.items()
    ]
    sources += [
        unlisted_status(
            u.source,
            u.url,
            u.error,
            head(u.source),
            parked.get(u.source),
            conflict=u.conflict,
            refused=u.refused,
        )
        for u in listed.unlisted
    ]
    urls = {r.group: r.display_url for r in tenant_registries}
    sources += removed_statuses(removed, heads, parked, urls)
    sources = with_rules(sources, rules, listed.sources)
    projections = _with_overdue(without_idle(projections, removed), results.get("overdue"))
    broker = results["broker"]
    if isinstance(broker, BaseException):
        kind = broker_kind(settings.broker)
        broker = QueueDepth(
            kind, settings.broker.queue, None, None, None, f"broker unreachable: {broker}"
        )
    return Report(sources, projections, broker, stores=stores)


class _Listings:
    """The registries' readings as they come in, so that a member another registry's member
    shares a database with (all but one of them to be refused, once the log says which
    keeps it) is not asked before that: a registry's read waits for the others' readings,
    half the time left at most (a registry that does not answer by then lists nothing that
    is known to share), then asks its other members at once."""

    def __init__(self, parts: Parts, groups: list[str]) -> None:
        self._parts = parts
        self._read = {group: threading.Event() for group in groups}
        self._readings: dict[str, Members] = {}
        self._lock = threading.Lock()

    def read(self, registry: TenantRegistry, appends: Callable[[], Appends]) -> Members:
        try:
            members = registry.read(appends)
            with self._lock:
                self._readings[registry.group] = members
            return members
        finally:
            self._read[registry.group].set()

    def unshared(self, group: str, members: Members) -> dict[str, SourceSettings]:
        """``members``' sources less those sharing a database with another registry's."""
        if len(self._read) < 2:
            return members.sources
        left = self._parts.left()
        until = None if left is None else time.monotonic() + 0.5 * left
        for other, read in self._read.items():
            if other != group:
                read.wait(None if until is None else max(0.0, until - time.monotonic()))
        with self._lock:
            shared = shared_members(self._readings)
        return {n: s for n, s in members.sources.items() if n not in shared}


class _Appends:
    """:func:`last_appends` for the registries' reads (which member keeps a database two
    rows name), read once in a part of its own. A registry's read waits for it half the time
    left, leaving its members the other half: a log that does not answer by then gives
    ``{}``, with ``unreadable`` saying why (none keeps it, as when the log cannot be read)."""

    def __init__(self, parts: Parts, log: EventLog) -> None:
        self._parts, self._log = parts, log
        self.unreadable: str | None = None

    def start(self) -> None:
        self._parts.start(_APPENDS, partial(last_appends, self._log.engine))

    def __call__(self) -> Appends:
        if self.unreadable is not None:  # given up once: not waited for again
            return {}
        self.start()
        found = self._parts.wait([_APPENDS], share=0.5)[_APPENDS]
        if isinstance(found, BaseException):
            self.unreadable = f"the event log cannot be read: {found}"
            return {}
        appends: Appends = found
        return appends


def _log_figures(log: EventLog) -> tuple[dict[str, int], dict[str, int], dict[str, str]]:
    """What the report reads of the event log: heads, parked outbox rows, binary-ids rules."""
    return log.heads(), log.parked_outbox_counts(), recorded_rules(log.engine)


def _with_overdue(
    projections: list[ProjectionStatus], overdue: dict[str, Overdue] | BaseException | None
) -> list[ProjectionStatus]:
    """The projections with their handlers past ``engine.handler_timeout``, as the workers
    record them in the broker's Redis; left unknown (``None``) on another broker, or when
    that Redis did not answer (the broker's own figures say so)."""
    if overdue is None or isinstance(overdue, BaseException):
        return projections
    return [
        replace(
            p,
            handlers_overdue=found.handlers if (found := overdue.get(p.projection)) else 0,
            oldest_overdue_seconds=found.oldest_seconds if found else None,
        )
        for p in projections
    ]


def _projections_by_store(runtime: Runtime) -> dict[str, list[str]]:
    held: dict[str, list[str]] = {}
    for name, projection in sorted(runtime.engine.projections.items()):
        held.setdefault(projection.store, []).append(name)
    return held


def _store_url(runtime: Runtime, store_name: str) -> str:
    """Where the store is only: no user, password or query, as tenants' locations are shown."""
    configured = runtime.settings.stores.get(store_name)
    url = runtime.settings.store.url if configured is None else configured.url
    return redact_dsn(url, location=True)


def _without_log(runtime: Runtime, held: dict[str, list[str]], error: str) -> list[StoreStatus]:
    """Every store's status when the log's store (``default``) is unreachable: the log's with
    ``error`` (named by where it is), listed even when it holds no projection; the others'
    projections not read either (their lag is measured against the log)."""
    url = _store_url(runtime, "default")
    where = read_store_at(url, runtime.settings.store_label("default"))
    stores = [StoreStatus("default", url, held.get("default", []), f"{where}: {error}")]
    for name, names in held.items():
        if name != "default":
            url = _store_url(runtime, name)
            needs = (
                f"read store {name} at {url}: not read, its projections' lag needs the event log"
            )
            stores.append(StoreStatus(name, url, names, needs))
    return stores


def _projections(
    runtime: Runtime, held: dict[str, list[str]], results: dict[str, Any]
) -> tuple[list[ProjectionStatus], list[StoreStatus]]:
    """The projections of the stores that answered, and every store's status; a store that
    fails otherwise than by being unreachable (a missing table) fails the report."""
    projections: list[ProjectionStatus] = []
    stores = []
    for store_name, names in held.items():
        result = results[f"projections:{store_name}"]
        url = _store_url(runtime, store_name)
        if isinstance(result, BaseException):
            detail = str(result) if isinstance(result, ReadmodelError | TimeoutError) else None
            said = detail or describe_db_error(result)
            if not unreachable(result):
                several = runtime.settings.store_label(store_name) is not None
                named = read_store_at(url, store_name) if several else f"read store {store_name}"
                raise ReadmodelError(f"{named}: {said}") from result
            where = f"read store {store_name} at {url}: {said}"
            stores.append(StoreStatus(store_name, url, names, where))
            continue
        projections.extend(result)
        stores.append(StoreStatus(store_name, url, names))
    projections.sort(key=lambda p: p.projection)
    return projections, stores


def _source(
    name: str, settings: SourceSettings, result: Any, log_head: int | None, parked: int | None
) -> SourceStatus:
    if isinstance(result, BaseException):
        from outbox.sources import source_kind
        from outbox.status import display_url

        url = settings.url
        return SourceStatus(
            name,
            source_kind(url),
            display_url(name, url),
            None,
            None,
            log_head,
            parked,
            str(result),
        )
    status: SourceStatus = result
    return SourceStatus(
        status.source,
        status.engine,
        status.url,
        status.undelivered,
        status.oldest_undelivered_age_seconds,
        log_head,
        parked,
        status.error,
        refused=status.refused,
    )
