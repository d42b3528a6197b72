"""What one reading of a tenant registry gives: its member sources and its bad rows.

Separate from :mod:`outbox.tenant_registry` (which connects to the master database and
runs the query) so that the settling of readings across registries
(:mod:`outbox.registry_overlaps`), the relays and the CLI can use a reading without the
reader's connection handling.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from config import SourceSettings, TenantRegistrySettings
from outbox.keepers import Appends
from outbox.source_groups import member_source


@dataclass(frozen=True, slots=True)
class RegistryProblem:
    """A registry row that gives no member source."""

    registry: str
    tenant: str | None  # None: the row has no usable tenant id
    reason: str
    row: int = 0  # 1-based, in the query's order
    waiting: bool = False
    """Not a bad row: the member waits for another registry to be read (its database may
    be that registry's member's)."""
    conflict: bool = False
    """The row names the database and outbox table of another source or tenant, which
    keeps it: a configuration conflict, not an unreachable database."""
    unknown_database: bool = False
    """The row's DSN cannot be read now (refused, missing): which database it names is not
    known (see :func:`behind_unknown_databases`)."""

    @property
    def source(self) -> str:
        """The member source the row would give (the group for a row without a tenant)."""
        return self.registry if self.tenant is None else member_source(self.registry, self.tenant)

    def __str__(self) -> str:
        who = f"tenant {self.tenant!r}" if self.tenant is not None else f"row {self.row}"
        return f"tenant registry {self.registry!r}, {who}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Members:
    """What one reading of a registry gave."""

    registry: str
    sources: dict[str, SourceSettings]
    problems: list[RegistryProblem] = field(default_factory=list)
    started: float = 0.0
    """When the read began (``time.monotonic()``): of two readings, the later-started one
    is the newer, whichever ended first."""


def behind_unknown_databases(
    group: str,
    sources: Mapping[str, SourceSettings],
    problems: list[RegistryProblem],
    appends: Appends,
    unreadable: bool = False,
) -> dict[str, str]:
    """Of ``sources`` (members of registry ``group``), those that wait (name -> why) behind
    the rows of ``problems`` whose database is not known now, when the event log has events
    of their tenants (of any, when it cannot be read: ``unreadable``): a member it has no
    events of may name one of those databases, and would relay that tenant's outbox as its
    own. Members it has events of go on."""
    unknown = [p for p in problems if p.unknown_database and p.tenant is not None]
    blockers = unknown if unreadable else [p for p in unknown if p.source in appends]
    if not blockers:
        return {}
    rows = " and ".join(
        f"tenant {p.tenant!r} (row {p.row})"
        if p.registry == group
        else f"tenant {p.tenant!r} of tenant registry {p.registry!r}"
        for p in blockers
    )
    those = "that tenant" if len(blockers) == 1 else "those tenants"
    reason = (
        f"waits until the DSN of {rows} can be read: the event log has events of {those}, and "
        f"it may name the same database"
    )
    return {name: reason for name in sorted(sources) if name not in appends}


def member_settings(registry: TenantRegistrySettings, tenant: str, dsn: str) -> SourceSettings:
    """The settings of the member source of ``tenant``: the registry's outbox table, the
    tenant's DSN, every row that tenant's."""
    table = registry.source.model_dump()
    table["columns"] = {**table["columns"], "tenant": ""}
    return SourceSettings(**table, url=dsn, tenant=tenant)
