"""``readmodel outbox binary-ids``: switch the ``binary_ids`` rule the log records for a source."""

from __future__ import annotations

import sys
from typing import Annotated, get_args

import typer

from config import OutboxTableSettings, Settings
from workers.cli_confirm import changing_nothing, confirm
from workers.cli_support import (
    EXIT_CONFIG,
    INTERRUPTED_CLOSING,
    INTERRUPTED_CONNECTING,
    ConfigOption,
    fail,
    guarded,
    interrupted_saying,
    load,
    out,
    require_migrated,
)

RULES: tuple[str, ...] = get_args(OutboxTableSettings.model_fields["binary_ids"].annotation)


def binary_ids_command(
    source: Annotated[
        str,
        typer.Argument(
            help="A source from the config; a member of a tenant registry (pos:acme); or the "
            "registry's group name, for every member the log has."
        ),
    ],
    rule: Annotated[str, typer.Argument(help="text, uuid, uuid-swapped or hex.")],
    config: ConfigOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Record RULE as SOURCE's binary_ids rule in the event log: switch it on purpose.

    The log records the binary_ids rule each source's aggregate ids are made by, and a relay
    whose setting is another is refused (it relays nothing; the rows stay in the outbox), so
    that two relays (an old config and a new one during a deploy) never key one source's
    aggregates two ways. This command is the one way to change it.

    Switching re-keys the source's aggregates: events logged from now on get ids made by
    RULE, so an aggregate with events logged under the old rule becomes another aggregate
    for the projections (its old and new events split, in other partitions), and a row
    relayed under the old rule whose acknowledgement was lost is relayed again as a second
    event. Switch only when the id columns never held ids the old rule made, for instance
    when every row with a binary UUID was parked.

    Stop every relay of the source and set binary_ids = RULE in each one's config first (the
    command refuses a config that says otherwise); a relay still running with the old
    setting is refused from now on. Then relay the rows parked under the old rule again as
    the README says ("A MySQL / MariaDB outbox"): clear their dispatched mark, or write them
    again from their raw row, and skip their parked entries.

    A source the log has no event of yet gets RULE recorded now, so that its first relay
    must have it (else that relay would record its own setting): a configured source, or a
    member its tenant registry lists. A member name the registry does not list and the log
    has never seen (a typo) is refused: it would stay a lane of every projection of the
    group.

    Exit codes: 0 recorded (or already so), 1 cancelled, 2 bad usage, an unknown source or
    a config that says otherwise (or no --yes without a terminal), 3 the read store or the
    tenant registry cannot be reached, 130 interrupted (Ctrl-C; it says what was recorded).
    """
    from outbox.log import EventLog
    from outbox.log_rules import recorded_rules, switch_rule
    from outbox.source_groups import group_of

    if rule not in RULES:
        raise fail(f"RULE {rule!r} is not a binary_ids rule: use {', '.join(RULES)}", EXIT_CONFIG)
    with interrupted_saying(INTERRUPTED_CONNECTING):
        settings = load(config, log_level="warning")
        _check_configured(settings, source, rule)
        require_migrated(settings, config)
        log = guarded(EventLog, settings.store.url)
    try:
        with changing_nothing():
            heads = guarded(log.heads)
            names = [source]
            if source in settings.tenants and source not in settings.sources:
                names = sorted(n for n in heads if group_of(n) == source)
                if not names:
                    out.print(
                        f"{source}: the log has no member source yet; each records {rule!r} "
                        f"with its first events",
                        highlight=False,
                    )
                    return
            elif source not in heads and source not in settings.sources:
                _require_listed(settings, source, heads)
            before = guarded(recorded_rules, log.engine)
            switching = sorted(n for n in names if before.get(n, rule) != rule)
            _confirm(switching, before, rule, yes)
        for done, name in enumerate(names):
            with interrupted_saying(_switch_interrupted(rule, names[:done], names[done:])):
                previous = guarded(switch_rule, log.engine, name, rule)
            if name not in heads:
                said = (
                    f"binary_ids {rule!r} recorded in the event log before the source's first "
                    f"event: a relay of it with another setting is refused"
                )
            elif previous == rule:
                said = f"binary_ids is already {rule!r} in the event log; nothing changed"
            elif previous is None:
                said = f"binary_ids {rule!r} recorded in the event log (none was)"
            else:
                said = (
                    f"binary_ids switched from {previous!r} to {rule!r} in the event log: "
                    f"events logged from now on are keyed by {rule!r}"
                )
            out.print(f"{name}: {said}", highlight=False, soft_wrap=True)
    finally:
        with interrupted_saying(INTERRUPTED_CLOSING):
            log.close()


def _switch_interrupted(rule: str, done: list[str], rest: list[str]) -> str:
    """What a Ctrl-C while the rule of ``rest[0]`` is recorded left (one transaction per
    source: recorded or not, unless the Ctrl-C cut its commit)."""
    recorded = f"recorded for {', '.join(done)} (said above); " if done else ""
    return (
        f"interrupted (Ctrl-C) while recording binary_ids {rule!r} for {rest[0]}: {recorded}"
        f"not for {', '.join(rest)} (unless the Ctrl-C came at {rest[0]}'s commit): run the "
        "same command again to finish (it says which already have it)"
    )


def _check_configured(settings: Settings, source: str, rule: str) -> None:
    """Exit 2 unless ``source`` is configured (a member of a registry: a valid tenant id),
    reads SQL ids, and says ``binary_ids = rule`` where its relays read it: a recorded rule
    no relay has would only stop them all."""
    from outbox.log_rules import rule_origin
    from outbox.source_groups import NAME, group_of
    from outbox.sources import source_kind

    group = group_of(source)
    if source in settings.sources:
        configured: OutboxTableSettings = settings.sources[source]
        if source_kind(settings.sources[source].url) == "mongodb":
            raise fail(
                f"source {source!r} is a MongoDB source: binary_ids does not apply to it",
                EXIT_CONFIG,
            )
    elif source in settings.tenants:
        configured = settings.tenants[source].source
    elif group in settings.tenants:
        tenant = source.partition(":")[2]
        if not NAME.fullmatch(tenant):
            raise fail(
                f"source {source!r}: {tenant!r} is not a tenant id of registry {group!r} "
                f"(letters, digits, '.', '_', '-'; at most 100): name a member as "
                f"{group}:TENANT, or the group as {group}",
                EXIT_CONFIG,
            )
        configured = settings.tenants[group].source
    else:
        known = ", ".join(sorted([*settings.sources, *settings.tenants])) or "none configured"
        raise fail(f"unknown source {source!r} (known: {known})", EXIT_CONFIG)
    if configured.binary_ids != rule:
        origin = rule_origin(settings, source)
        fix = (
            f"set {origin.variable}={rule}"
            if origin.variable is not None
            else f'set binary_ids = "{rule}" there'
        )
        raise fail(
            f"source {source!r} is configured with binary_ids = {configured.binary_ids!r} "
            f"({origin}): {fix} first, and in the config of every relay of the source (a "
            f"relay whose setting is not the recorded rule is refused)",
            EXIT_CONFIG,
        )


def _require_listed(settings: Settings, source: str, heads: dict[str, int]) -> None:
    """Exit 2 unless the tenant registry lists ``source``, a member the log has never seen:
    a head row for a name no registry gives (a typo) would be a lane of every projection
    of the group for good. A tenant whose row cannot be used is refused too: no relay of it
    runs, and fixing the row may rename or drop it. Exit 3 when the registry cannot be read."""
    from outbox import registry_reads
    from outbox.source_groups import group_of
    from outbox.tenant_registry import TenantRegistry

    group = group_of(source)
    assert group is not None
    registry = TenantRegistry(group, settings.tenants[group], settings.sources)
    try:
        members = guarded(registry_reads.read_within, registry, None, registry_reads.READ_BOUND)
    finally:
        registry.close()
    if source in members.sources:
        return
    for problem in members.problems:
        if problem.tenant is not None and problem.source == source:
            row = f"row {problem.row}: " if problem.row else ""
            raise fail(
                f"source {source!r}: tenant registry {group!r} lists tenant {problem.tenant!r} "
                f"in a row readmodel cannot use ({row}{problem.reason}), so no "
                "relay of it runs: fix the row first, then record the rule",
                EXIT_CONFIG,
            )
    listed = set(members.sources)
    known = ", ".join(sorted(listed | {n for n in heads if group_of(n) == group})) or "none"
    raise fail(
        f"unknown source {source!r}: tenant registry {group!r} lists no tenant "
        f"{source.partition(':')[2]!r}, and the event log has no such source (known: {known})",
        EXIT_CONFIG,
    )


def _confirm(switching: list[str], before: dict[str, str], rule: str, yes: bool) -> None:
    """Ask before re-keying: only when the log records another rule for some source."""
    if not switching or yes:
        return
    if not sys.stdin.isatty():
        raise fail("refusing to switch without confirmation: pass --yes", EXIT_CONFIG)
    what = ", ".join(f"{name} from {before[name]!r}" for name in switching)
    confirm(
        False,
        f"switch binary_ids of {what} to {rule!r}? Their aggregates are re-keyed from now on",
        declined="nothing switched",
    )
