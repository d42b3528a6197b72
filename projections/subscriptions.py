"""Subscriptions no source feeds: a projection whose ``@on`` names a source that no
configuration lists (a typo: ``"bnak"``) never received an event, and ``status`` showed
it caught up (lag 0, the head of a source the log has nothing of). Such a name is refused
when the runtime is built, unless the event log has events of it (a source retired from the
configuration, relayed by another deployment's config) or of a member of it (a group)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from outbox.source_groups import group_of


def unknown_subscriptions(
    projections: Sequence[Any],
    sources: Iterable[str],
    registries: Iterable[str] = (),
    logged: Iterable[str] = (),
) -> list[tuple[str, str]]:
    """``(projection, name)`` for each subscribed name that is none of: a configured source
    (``sources``, members ``pos:acme`` included), the group of a configured member, a tenant
    registry's group (``registries``) or one of its members (``pos:<any tenant>``: the
    registry lists them at run time), a source of the log (``logged``) or its group."""
    known = set(sources) | set(logged)
    groups = {group_of(name) for name in known} | set(registries)
    dynamic = set(registries)
    return [
        (projection.name, name)
        for projection in projections
        for name in projection.sources
        if name not in known and name not in groups and group_of(name) not in dynamic
    ]


def unknown_message(unknown: Sequence[tuple[str, str]], sources: Iterable[str]) -> str:
    """The refusal of :func:`unknown_subscriptions`' first name, listing what is configured."""
    projection, name = unknown[0]
    listed = sorted(set(sources))
    configured = ", ".join(repr(s) for s in listed) or "none"
    return (
        f"projection {projection!r} subscribes to source {name!r}, which no configuration "
        f"lists ([sources.*], [tenants.*]: {configured}) and the event log has no events of: "
        f"it would never receive one; fix the name in its @on, or configure the source"
    )
