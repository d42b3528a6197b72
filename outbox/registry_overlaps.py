"""Tenant registries listing one database: one member relays its outbox, the others are
refused.

Each registry checks its own rows (and the ``[sources.*]``); this checks the members of
every registry against each other. Two registries' members reading one outbox would take
each other's rows under two names, and one aggregate's events would be split between two
sources with no order between them (DESIGN.md invariant 3). Which one keeps it is decided
the same way in every relay process, from what they all share: the member the event log
has appended for most recently keeps it (it is the one relaying); when the log has
nothing from any of them (a fresh start), the first by name.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
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
from outbox.tenant_registry import Members, RegistryProblem, registries

logger = structlog.get_logger("readmodel.relay")

Appends = Mapping[str, datetime | None]
"""``{source: when the log last appended for it}``, for sources the log has events of."""


def last_appends(engine: sa.Engine) -> dict[str, datetime | None]:
    """The sources the event log has events of, each with the time of its last append."""
    query = sa.select(log_heads.c.source, log_heads.c.updated_at).where(log_heads.c.head > 0)
    try:
        with engine.connect() as conn:
            return {str(source): at for source, at in conn.execute(query)}
    except SQLAlchemyError as exc:  # the registry's members wait, as for an unreadable one
        raise SourceError(
            f"the event log cannot be read to check tenant registries' shared databases: "
            f"{describe_db_error(exc)}"
        ) from exc


def settle(readings: Mapping[str, Members], appends: Appends) -> dict[str, Members]:
    """``readings`` (by group) with every member that reads the outbox of another registry's
    member moved to its registry's problems, but the one that keeps it (see the module)."""
    claims: dict[tuple[str, ...], list[str]] = {}
    settings = {}
    for members in readings.values():
        for name, source in members.sources.items():
            claims.setdefault(outbox_identity(source), []).append(name)
            settings[name] = source
    refused: dict[str, str] = {}  # member -> the member that keeps its outbox
    for names in claims.values():
        if len({group_of(n) for n in names}) > 1:
            keeper = min(names, key=lambda n: _precedence(n, appends))
            refused.update({n: keeper for n in names if n != keeper})
    out = {}
    for group, members in readings.items():
        problems = [
            _refusal(group, settings[name].tenant, keeper)
            for name, keeper in refused.items()
            if group_of(name) == group
        ]
        if not problems:
            out[group] = members
            continue
        sources = {n: s for n, s in members.sources.items() if n not in refused}
        out[group] = Members(group, sources, [*members.problems, *problems])
    return out


def _precedence(name: str, appends: Appends) -> tuple[bool, float, str]:
    if name not in appends:
        return (True, 0.0, name)
    at = appends[name]
    return (False, float("inf") if at is None else -at.timestamp(), name)


def _refusal(group: str, tenant: str | None, keeper: str) -> RegistryProblem:
    keeper_group, _, keeper_tenant = keeper.partition(":")
    reason = (
        f"the same database and outbox table as tenant {keeper_tenant!r} of tenant registry "
        f"{keeper_group!r}, which relays it: not relayed (each tenant needs a database of its "
        f"own)"
    )
    return RegistryProblem(group, tenant, reason)


class Peers:
    """Every registry of a configuration, for a relay to check its registry's members
    against the others' (the others may be relayed by other processes, or by none).

    A peer's reading is reused for its ``refresh``; a peer that cannot be read is checked
    against with the members it listed last (none, if it was never read: then nothing of it
    is known to check against, which is logged).
    """

    def __init__(self, settings: Settings, log_engine: sa.Engine) -> None:
        self._registries = {r.group: r for r in registries(settings)}
        self._readings: dict[str, tuple[float, Members]] = {}
        self._locks = {group: threading.Lock() for group in self._registries}
        self._unread: set[str] = set()
        self._log_engine = log_engine

    def settle(self, members: Members) -> Members:
        """``members`` (one registry's reading now) less those another registry's keep."""
        group = members.registry
        self._readings[group] = (time.monotonic(), members)
        readings = {group: members}
        for other in self._registries:
            if other != group and (reading := self._reading(other)) is not None:
                readings[other] = reading
        if len(readings) == 1:
            return members
        return settle(readings, last_appends(self._log_engine))[group]

    def _reading(self, group: str) -> Members | None:
        registry = self._registries[group]
        with self._locks[group]:
            known = self._readings.get(group)
            fresh = registry.settings.refresh.total_seconds()
            if known is not None and time.monotonic() - known[0] < fresh:
                return known[1]
            try:
                members = registry.read()
            except (SourceError, TimeoutError) as exc:
                if group not in self._unread:
                    logger.warning(
                        "tenant registry unreadable; its members known before are checked "
                        "against (none, if never read)",
                        registry=group,
                        error=str(exc),
                    )
                self._unread.add(group)
                return None if known is None else known[1]
            finally:
                registry.close()  # read again after its refresh: no connection kept meanwhile
            self._unread.discard(group)
            self._readings[group] = (time.monotonic(), members)
            return members
