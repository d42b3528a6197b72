"""Tenants removed from their registry, as ``status`` shows them.

A removed member keeps its log events, lanes and checkpoints (the workers still apply what
was relayed). ``status`` leaves it out once nothing of it waits, and shows it, marked
removed, while something does: outbox rows parked by its relay, or a projection lane that
has not applied its events (lag) or has parked events of it. Only a registry read now
tells that a member is gone: when it cannot be read, its members are not called removed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace

from outbox.source_groups import group_of
from outbox.status import SourceStatus
from projections.status import ProjectionStatus

ENGINE = "-"  # its database is no longer known


def removed_members(
    logged: Iterable[str], readable: Collection[str], listed: Collection[str]
) -> set[str]:
    """The sources of the log (``logged``) that are members of a registry read now
    (``readable``: their groups) and that it no longer lists (``listed``: every source and
    refused row of this reading)."""
    return {s for s in logged if group_of(s) in readable and s not in listed}


def removed_statuses(
    removed: Iterable[str],
    heads: Mapping[str, int],
    parked: Mapping[str, int],
    url: Mapping[str, str],
) -> list[SourceStatus]:
    """A status line for each removed member that has outbox rows parked (``url``: its
    registry's, by group, password masked)."""
    return [
        SourceStatus(
            name,
            ENGINE,
            url[group_of(name) or ""],
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
