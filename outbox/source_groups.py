"""Source groups: the databases of one service with a database per tenant.

A member source is named ``<group>:<member>`` (``pos:acme``) and is a source like any
other in the event log: its own gap-free positions, relay leader, lanes and checkpoints.
A projection subscribes to the group (``@on("pos", ...)``) and receives every member's
events. The group is read off the name, so a worker finds a group's members in the log
(``rm_log_heads``) without reading any tenant registry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

SEPARATOR = ":"
NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")  # whole names only: NAME.fullmatch
"""A source name, a group name and a member name (a tenant id) each."""


def group_of(source: str) -> str | None:
    """The group of a member source (``"pos"`` for ``"pos:acme"``); ``None`` for a source
    outside any group."""
    group, sep, _ = source.partition(SEPARATOR)
    return group if sep else None


def member_source(group: str, member: str) -> str:
    """The source name of ``member`` (a tenant id) of ``group``."""
    return f"{group}{SEPARATOR}{member}"


def members_of(group: str, sources: Iterable[str]) -> list[str]:
    """The member sources of ``group`` among ``sources``, sorted."""
    return sorted(s for s in sources if group_of(s) == group)


def configured_groups(source_names: Iterable[str], registries: Iterable[str] = ()) -> set[str]:
    """The groups a configuration declares: those of its member sources, and each tenant
    registry's."""
    return {g for g in map(group_of, source_names) if g is not None} | set(registries)


def source_key(name: str) -> str:
    """Where source ``name`` is configured: ``[sources.NAME]``; a member of a group is
    configured alone or by its group's tenant registry."""
    group = group_of(name)
    if group is None:
        return f"[sources.{name}]"
    return f'[sources."{name}"] or [tenants.{group}.source]'
