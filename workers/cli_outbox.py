"""``readmodel outbox init``: create the outbox of a source, or of each member of a tenant
registry, refusing the rows the relay would refuse (those naming a database another row,
of this registry or another, keeps)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import typer
from rich.markup import escape

from config import Settings
from outbox.keepers import StoreAppends
from outbox.registry_members import Members, RegistryProblem
from outbox.tenant_registry import TenantRegistry
from workers.cli_support import (
    EXIT_CONFIG,
    EXIT_UNREACHABLE,
    ConfigOption,
    err,
    fail,
    guarded,
    load,
    out,
)


def outbox_init(
    source: Annotated[str, typer.Option("--source", "-s", help="Source name from the config.")],
    config: ConfigOption = None,
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the DDL instead of applying it.")
    ] = False,
) -> None:
    """Create the outbox table, its indexes and (PostgreSQL) the NOTIFY trigger for a source;
    for a MongoDB source, the collection's indexes. A tenant registry's group name (or one
    member, pos:acme) does it for each tenant database the registry lists."""
    from outbox.sources import open_source, source_failure

    settings = load(config, log_level="warning")
    targets, held = _outbox_sources(settings, source)
    unreachable = 0
    for name, source_settings in targets.items():
        # One tenant database down, or a DSN that cannot be opened, does not stop the others'.
        try:
            outbox_source = open_source(name, source_settings)
            try:
                statements = outbox_source.ddl()
                if not print_only:
                    outbox_source.install()
            finally:
                outbox_source.close()
        except Exception as exc:
            if len(targets) == 1:
                guarded(_reraise, source_failure(name, exc) if _unexpected(exc) else exc)
            err.print(
                f"[red]{escape(str(source_failure(name, exc)))}[/]", highlight=False, soft_wrap=True
            )
            unreachable += 1
            continue
        if print_only:
            for statement in statements:
                print(statement.rstrip() + ";\n")
            continue
        out.print(f"{name}: outbox table {source_settings.table!r} is ready")
    if unreachable:
        raise typer.Exit(EXIT_UNREACHABLE)
    if held:  # rows refused (a database another row keeps) or waiting for a registry
        raise typer.Exit(held)


def _unexpected(exc: BaseException) -> bool:
    """Not an error readmodel or the database driver reports itself (``guarded`` knows those)."""
    from sqlalchemy.exc import SQLAlchemyError

    from outbox.errors import ReadmodelError

    return not isinstance(exc, (ReadmodelError, SQLAlchemyError))


def _reraise(exc: BaseException) -> None:
    raise exc


def _outbox_sources(settings: Settings, source: str) -> tuple[dict[str, Any], int]:
    """``source`` from the config, or the members of a tenant registry it names; and the exit
    code owed for the rows held back (0: none): 2 for a bad row, or one naming another row's
    database, whichever registry lists it (the one the relay keeps is kept: the one the event
    log has events of; both refused when it cannot be read), 3 for a member waiting, as in
    the relay, for another registry that cannot be read. With one member named, only its own
    row's problem is said (and what holds it: the registry it waits for, an unreadable log);
    a member the registry does not list is a usage error (2, as ``relay --once``)."""
    from outbox.source_groups import group_of

    if source in settings.sources:
        return {source: settings.sources[source]}, 0
    group = source if source in settings.tenants else group_of(source)
    if group not in settings.tenants:
        known = ", ".join(sorted([*settings.sources, *settings.tenants])) or "none configured"
        raise fail(f"unknown source {source!r} (known: {known})", EXIT_CONFIG)
    appends = StoreAppends(settings.store.url)
    members, unread = _settled(settings, group, appends)
    # One member named: only its own row's problem, and what decides it, is its business.
    said = [p for p in members.problems if source == group or p.source == source]
    if any(p.waiting for p in said):
        for why in unread.values():
            err.print(f"[red]{escape(why)}[/]", highlight=False, soft_wrap=True)
    for problem in said:
        err.print(f"[red]{escape(str(problem))}[/]", highlight=False, soft_wrap=True)
    if any(p.conflict for p in said) and appends.unreadable:
        err.print(
            f"[red]{escape(appends.unreadable)}: which row keeps a database two rows name "
            f"(the one the event log has events of, as the relay decides) is not known, so "
            f"both are refused; make the store reachable and run readmodel migrate, or give "
            f"each tenant a database of its own[/]",
            highlight=False,
            soft_wrap=True,
        )
    if source == group:
        return members.sources, max((_held(p) for p in members.problems), default=0)
    if source not in members.sources:
        for problem in members.problems:  # listed, and held back (said above)
            if problem.source == source:
                raise typer.Exit(_held(problem))
        listed = ", ".join(members.sources) or "none"
        raise fail(
            f"tenant registry {group!r} lists no {source!r} (it lists: {listed})", EXIT_CONFIG
        )
    return {source: members.sources[source]}, 0


def _held(problem: RegistryProblem) -> int:
    """The exit code the relay owes a row held back: 3 while it waits for another registry,
    2 when the configuration refuses it (a bad row, or a database another row keeps)."""
    return EXIT_UNREACHABLE if problem.waiting else EXIT_CONFIG


def _settled(
    settings: Settings, group: str, appends: StoreAppends
) -> tuple[Members, dict[str, str]]:
    """The members of registry ``group`` the relay would relay, checked against every other
    registry of the configuration by the relay's rule
    (:func:`outbox.registry_overlaps.settle`); and the error of each other registry that
    cannot be read (its peers' new members wait for it). The registries are read side by
    side."""
    from outbox import registry_reads
    from outbox.registry_overlaps import settle
    from outbox.tenant_registry import registries

    def read(registry: TenantRegistry) -> Members | Exception:
        try:
            return registry_reads.read_within(registry, appends, registry_reads.READ_BOUND)
        except Exception as exc:  # the own registry's is raised below, the others' said
            return exc
        finally:
            registry.close()

    tenant_registries = registries(settings)
    with ThreadPoolExecutor(len(tenant_registries), "outbox-init-read") as pool:
        readings_or_errors = pool.map(read, tenant_registries)
        results = dict(zip([r.group for r in tenant_registries], readings_or_errors, strict=True))
    own = results.pop(group)
    if isinstance(own, Exception):
        guarded(_reraise, own)
    readings: dict[str, Members] = {group: own}
    unread: dict[str, str] = {}
    for other, result in results.items():
        if isinstance(result, Exception):
            unread[other] = str(result)
        else:
            readings[other] = result
    if len(readings) == 1 and not unread:
        return own, unread
    logged = appends()
    return settle(readings, None if appends.unreadable else logged, unread)[group], unread
