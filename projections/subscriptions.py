"""Subscriptions no source feeds: a projection whose ``@on`` names a source that no
configuration lists (a typo: ``"bnak"``) never received an event, and ``status`` showed
it caught up (lag 0, the head of a source the log has nothing of). Such a name is refused
when the runtime is built, unless the configuration lists it in ``external_sources`` (a
source another deployment relays into this log), or the event log has events of it (a
source retired from the configuration, or already relayed elsewhere) or of a member of it
(a group). The refusal names the closest fed name when there is one (``did you mean
'bank'?``), and says where to declare a source relayed elsewhere. ``readmodel query`` only
warns (:func:`unfed_subscriptions` for the projection it reads)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa

from outbox.log import EventLog
from outbox.source_groups import group_of


class Unfed(NamedTuple):
    projection: str
    source: str
    message: str


def unfed_subscriptions(
    settings: Any, projections: Sequence[Any], log_engine: sa.Engine
) -> list[Unfed]:
    """Each subscription of ``projections`` nothing in ``settings`` or the event log (on
    ``log_engine``) feeds, with its message. A configuration listing no source, registry
    nor external source at all (a worker's, whose relays run on other configurations, none
    declared) has nothing to check against: none."""
    sources, registries = list(settings.sources), list(settings.tenants)
    external = list(settings.external_sources)
    if not sources and not registries and not external:
        return []
    fed = [*sources, *external]
    unknown = unknown_subscriptions(projections, fed, [*registries, *external])
    logged: list[str] = []
    if unknown and sa.inspect(log_engine).has_table("rm_log_heads"):
        logged = list(EventLog(settings.store.url, engine=log_engine).heads())
        unknown = unknown_subscriptions(projections, fed, [*registries, *external], logged)
    listed = [*sources, *registries, *external]
    return [
        Unfed(projection, name, unknown_message(projection, name, listed, logged))
        for projection, name in unknown
    ]


def unknown_subscriptions(
    projections: Sequence[Any],
    sources: Iterable[str],
    registries: Iterable[str] = (),
    logged: Iterable[str] = (),
) -> list[tuple[str, str]]:
    """``(projection, name)`` for each subscribed name that is none of: a fed source
    (``sources``: configured or external, members ``pos:acme`` included), the group of a
    fed member, a group whose members are listed elsewhere (``registries``: a tenant
    registry's, an external name) or one of its members (``pos:<any tenant>``), a source of
    the log (``logged``) or its group."""
    known = set(sources) | set(logged)
    groups = {group_of(name) for name in known} | set(registries)
    dynamic = set(registries)
    return [
        (projection.name, name)
        for projection in projections
        for name in projection.sources
        if name not in known and name not in groups and group_of(name) not in dynamic
    ]


def unknown_message(
    projection: str, name: str, listed: Iterable[str], logged: Iterable[str] = ()
) -> str:
    """Why ``projection``'s subscription to ``name`` is refused, what is configured, the
    closest fed name, and how to declare a source another deployment relays."""
    listed = sorted(set(listed))
    configured = ", ".join(repr(s) for s in listed) or "none"
    fed = {*listed, *logged}
    fed |= {g for g in map(group_of, fed) if g is not None}
    close = difflib.get_close_matches(name, sorted(fed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"projection {projection!r} subscribes to source {name!r}, which no configuration "
        f"lists ([sources.*], [tenants.*], external_sources: {configured}) and the event log "
        f"has no events of: it would never receive one{hint}; fix the name in its @on, "
        f"configure the source, or, if another deployment relays it into this event log, "
        f"list it in external_sources"
    )
