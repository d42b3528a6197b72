"""Group members the configuration no longer gives, as ``status`` shows them: tenants
removed from their registry, and static members (``[sources."pos:acme"]``) deleted from
the file.

A removed member keeps its log events, lanes and checkpoints (the workers still apply what
was relayed). ``status`` leaves it out once nothing of it waits, and shows it, marked
removed, while something does: outbox rows parked by its relay, or a projection lane that
has not applied its events (lag) or has parked events of it. Only a registry read now
tells that a registry's member is gone: when it cannot be read, its members are not called
removed; nor are members of a group the configuration has no trace of (its file may not be
the relay's: workers need no sources).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace

from outbox.source_groups import group_of
from outbox.status import SourceStatus
from projections.status import ProjectionStatus

ENGINE = "-"  # its database is no longer known


def removed_members(
    logged: Iterable[str], groups: Collection[str], listed: Collection[str]
) -> set[str]:
    """The sources of the log (``logged``) that are members of a group the configuration
    gives every member of now (``groups``: a registry read now, or a group of static
    members) and that it no longer gives (``listed``: every source, and every member and
    refused row of the registries read)."""
    return {s for s in logged if group_of(s) in groups and s not in listed}


def member_groups(static: Iterable[str], registries: Iterable[str]) -> set[str]:
    """The groups whose members are all known now: the groups of the configuration's
    static members (``static``: its ``[sources.*]``) and the registries read now."""
    return {g for s in static if (g := group_of(s)) is not None} | set(registries)


def removed_statuses(
    removed: Iterable[str],
    heads: Mapping[str, int],
    parked: Mapping[str, int],
    url: Mapping[str, str],
) -> list[SourceStatus]:
    """A status line for each removed member that has outbox rows parked (``url``: its
    registry's, by group, password masked; ``-`` for a static member's)."""
    return [
        SourceStatus(
            name,
            ENGINE,
            url.get(group_of(name) or "", ENGINE),
            None,
            None,
            heads.get(name, 0),
            parked[name],
            removed=True,
        )
        for name in sorted(removed)
        if parked.get(name, 0)
    ]


def without_idle(
    projections: list[ProjectionStatus], removed: Collection[str]
) -> list[ProjectionStatus]:
    """``projections`` less the lanes of removed members with nothing to apply and no parked
    events; the others marked removed."""
    out = []
    for p in projections:
        waiting = {lane.source for lane in p.lanes if lane.lag_events}
        waiting |= {source for source, count in p.parked_by_source.items() if count}
        lanes = [
            replace(lane, removed=lane.source in removed)
            for lane in p.lanes
            if lane.source not in removed or lane.source in waiting
        ]
        out.append(replace(p, lanes=lanes))
    return out
