"""Every source of a configuration: its ``[sources.*]`` and its tenant registries' members.

Separate from :mod:`outbox.tenant_registry` (one registry, read): this puts the readings
of all registries together, settles them (:mod:`outbox.registry_overlaps`) and lists what
they do not give, for ``status``, ``health`` and the relays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from config import Settings, SourceSettings
from outbox.errors import SourceError
from outbox.registry_members import Members, RegistryProblem


@dataclass(frozen=True, slots=True)
class Unlisted:
    """A source that a registry should give and does not: a bad row, or every member of a
    registry that cannot be read (reported under the group's name)."""

    source: str
    url: str  # where the registry is (no user, password or query)
    error: str
    conflict: bool = False
    """Refused because another source or tenant reads its database and outbox table (a
    configuration conflict), not because something cannot be reached."""
    refused: bool = False
    """Refused by the configuration (a bad row, or a conflict): not unreachable, nor
    waiting for another registry."""


@dataclass(frozen=True, slots=True)
class SourceList:
    """Every source of a configuration: ``[sources.*]`` and the registries' members."""

    sources: dict[str, SourceSettings]
    unlisted: list[Unlisted]


def list_sources(
    settings: Settings,
    reads: Mapping[str, Members | BaseException] | None = None,
    appends: Mapping[str, Any] | None = None,
) -> SourceList:
    """The configured sources and each registry's members; ``reads`` gives registry readings
    already taken (by group), the others are read here. A member reading the outbox of
    another registry's member is listed as refused unless it keeps it, by ``appends``
    (:func:`outbox.keepers.last_appends`; ``None``: as on a fresh start); while
    a registry cannot be read, the others' members ``appends`` lacks are listed as waiting."""
    from outbox import registry_reads
    from outbox.registry_overlaps import settle
    from outbox.tenant_registry import registries

    sources = dict(settings.sources)
    unlisted: list[Unlisted] = []
    readings: dict[str, Members] = {}
    unread: dict[str, str] = {}
    urls: dict[str, str] = {}
    for registry in registries(settings):
        try:
            if reads is not None and registry.group in reads:
                members = reads[registry.group]
            else:
                logged = None if appends is None else lambda: appends or {}
                members = registry_reads.read_within(registry, logged, registry_reads.READ_BOUND)
            if isinstance(members, BaseException):
                raise members
        except (SourceError, TimeoutError) as exc:
            unlisted.append(Unlisted(registry.group, registry.display_url, str(exc)))
            unread[registry.group] = str(exc)
            continue
        finally:
            registry.close()
        readings[registry.group] = members
        urls[registry.group] = registry.display_url
    for group, members in settle(readings, appends or {}, unread).items():
        sources.update(members.sources)
        by_source: dict[str, list[RegistryProblem]] = {}
        for problem in members.problems:  # rows without a tenant: all under the group's name
            by_source.setdefault(problem.source, []).append(problem)
        unlisted += [
            Unlisted(
                name,
                urls[group],
                "; ".join(str(p) for p in problems),
                conflict=all(p.conflict for p in problems),
                refused=not any(p.waiting for p in problems),
            )
            for name, problems in by_source.items()
        ]
    return SourceList(sources, unlisted)
