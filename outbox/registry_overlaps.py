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

from collections.abc import Mapping
from dataclasses import replace

from config.outbox_identity import outbox_groups
from outbox.keepers import Appends, precedence, split_note
from outbox.registry_members import Members, RegistryProblem, behind_unknown_databases
from outbox.source_groups import group_of


def settle(
    readings: Mapping[str, Members],
    appends: Appends | None,
    unread: Mapping[str, str] | None = None,
) -> dict[str, Members]:
    """``readings`` (by group) with every member that reads the outbox of another registry's
    member moved to its registry's problems, but the one that keeps it (see the module);
    ``appends`` ``None``: the event log could not be read (``outbox init``), so none keeps
    it and all are moved. ``unread``: the registries whose members are not known now
    (group -> why; never read, or read before and failing since): a member of another
    registry the log has no events of waits for them."""
    claims = _claims(readings)
    settings = {n: s for members in readings.values() for n, s in members.sources.items()}
    refused: dict[str, RegistryProblem] = {}
    for names in claims:
        if appends is None:
            for name in names:
                refused[name] = _unsettled(name, settings[name].tenant, names)
            continue
        keeper = min(names, key=lambda n: precedence(n, appends))
        split = sorted(n for n in names if n in appends)
        for name in names:
            if name != keeper:
                refused[name] = _refusal(name, settings[name].tenant, keeper, split)
    logged = appends or {}
    if appends is not None:
        refused |= _behind_unknown(readings, refused, appends)
    for name in settings.keys() - refused.keys() - logged.keys() if unread else ():
        group = group_of(name) or ""
        others = {g: why for g, why in (unread or {}).items() if g != group}
        if others:
            refused[name] = _waiting(group, settings[name].tenant, others, appends is not None)
    out = {}
    for group, members in readings.items():
        problems = [p for name, p in sorted(refused.items()) if group_of(name) == group]
        if not problems:
            out[group] = members
            continue
        sources = {n: s for n, s in members.sources.items() if n not in refused}
        out[group] = replace(members, sources=sources, problems=[*members.problems, *problems])
    return out


def _behind_unknown(
    readings: Mapping[str, Members], refused: Mapping[str, RegistryProblem], appends: Appends
) -> dict[str, RegistryProblem]:
    """The members that wait behind another registry's rows whose database is not known now
    (:func:`outbox.registry_members.behind_unknown_databases`; a registry's own rows are
    checked when it is read)."""
    waiting = {}
    for group, members in readings.items():
        others = [p for g, m in readings.items() if g != group for p in m.problems]
        sources = {n: s for n, s in members.sources.items() if n not in refused}
        for name, reason in behind_unknown_databases(group, sources, others, appends).items():
            waiting[name] = RegistryProblem(group, sources[name].tenant, reason, waiting=True)
    return waiting


def split_histories(readings: Mapping[str, Members], appends: Appends) -> list[list[str]]:
    """The members of different registries reading one outbox that the log has events of
    all (two or more in each list, by name): one aggregate's events may be split."""
    splits = [sorted(n for n in names if n in appends) for names in _claims(readings)]
    return [names for names in splits if len(names) > 1]


def shared_members(readings: Mapping[str, Members]) -> set[str]:
    """The members of ``readings`` reading one outbox with a member of another registry:
    all but one of each outbox's will be refused (which one keeps it is the log's to say)."""
    return {name for names in _claims(readings) for name in names}


def _claims(readings: Mapping[str, Members]) -> list[list[str]]:
    """The members of more than one registry reading one outbox, per outbox."""
    sources = {n: s for members in readings.values() for n, s in members.sources.items()}
    claims = outbox_groups(sources)
    return [names for names in claims if len({group_of(n) for n in names}) > 1]


def _refusal(name: str, tenant: str | None, keeper: str, split: list[str]) -> RegistryProblem:
    reason = (
        f"the same database and outbox table as {_member_of(keeper)}, which relays it: not "
        f"relayed (each tenant needs a database of its own)"
    )
    if len(split) > 1:
        reason += split_note(split)
    return RegistryProblem(group_of(name) or "", tenant, reason, conflict=True)


def _unsettled(name: str, tenant: str | None, names: list[str]) -> RegistryProblem:
    others = " and ".join(_member_of(n) for n in names if n != name)
    reason = (
        f"the same database and outbox table as {others}: not relayed (each tenant needs a "
        f"database of its own)"
    )
    return RegistryProblem(group_of(name) or "", tenant, reason, conflict=True)


def _member_of(name: str) -> str:
    group, _, tenant = name.partition(":")
    return f"tenant {tenant!r} of tenant registry {group!r}"


def _waiting(
    group: str, tenant: str | None, unread: Mapping[str, str], logged: bool
) -> RegistryProblem:
    others = " and ".join(f"tenant registry {g!r}" for g in sorted(unread))
    log = "has no events of this tenant" if logged else "cannot be read"
    reason = (
        f"waits until {others} is read: the event log {log}, and "
        f"{'they' if len(unread) > 1 else 'it'} may list the same database (relayed already)"
    )
    return RegistryProblem(group, tenant, reason, waiting=True)
