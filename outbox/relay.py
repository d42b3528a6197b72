"""The relay of a configuration: every source, each relayed by its own thread, one
active relay per source; the member sources of each tenant registry too.

Relaying one source (:class:`SourceRelay`, its hooks and totals) lives in
:mod:`outbox.source_relay`; importable from here too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from config import Settings
from outbox.errors import SourceError
from outbox.log import EventLog
from outbox.log_rules import rule_origin
from outbox.source_groups import group_of
from outbox.source_relay import (
    KEPT_ERRORS,
    RelayHooks,
    RelayTotals,
    SourceRelay,
    drain_source,
)
from outbox.sources import open_source

__all__ = [
    "KEPT_ERRORS",
    "Relay",
    "RelayHooks",
    "RelayTotals",
    "SourceRelay",
    "drain_source",
]


def _registry_members(settings: Settings, names: list[str]) -> dict[str, set[str] | None]:
    """The registries ``names`` asks for: a group (every member, ``None``) or members of it
    (``pos:acme``, relayed once the registry lists it)."""
    wanted: dict[str, set[str] | None] = {}
    for name in names:
        if name in settings.sources:
            continue
        if name in settings.tenants:
            wanted[name] = None
        elif (group := group_of(name)) in settings.tenants:
            members = wanted.setdefault(group, set())
            if members is not None:
                members.add(name)
    return wanted


class Relay:
    """All configured sources, each relayed by its own thread; the member sources of each
    tenant registry (``[tenants.NAME]``) too, as the registry lists them."""

    def __init__(
        self,
        settings: Settings,
        *,
        sources: Iterable[str] | None = None,
        hooks: Iterable[RelayHooks] = (),
        log: EventLog | None = None,
    ) -> None:
        from outbox.registry_peers import Peers
        from outbox.tenant_registry import TenantRegistry
        from outbox.tenant_relays import TenantRelays

        names = [*settings.sources, *settings.tenants] if sources is None else list(sources)
        registries = _registry_members(settings, names)  # group -> members (None: all)
        unknown = [n for n in names if n not in settings.sources and n not in registries]
        unknown = [n for n in unknown if group_of(n) not in registries]
        if unknown:
            known = ", ".join(sorted([*settings.sources, *settings.tenants])) or "none configured"
            raise SourceError(f"unknown source {unknown[0]!r} (known: {known})")
        self.log = log or EventLog(settings.store.url)
        self.log.create_tables()
        hooks = list(hooks)
        peers = Peers(settings, self.log.engine) if len(settings.tenants) > 1 else None
        self.relays = [
            SourceRelay(
                open_source(name, settings.sources[name]),
                self.log,
                settings.relay,
                hooks,
                origin=rule_origin(settings, name),
            )
            for name in names
            if name in settings.sources
        ]
        self.tenant_relays = [
            TenantRelays(
                TenantRegistry(group, settings.tenants[group], settings.sources),
                self.log,
                settings.relay,
                hooks,
                only=members,
                origin=rule_origin(settings, group),
                peers=peers,
            )
            for group, members in registries.items()
        ]

    def drain(self) -> dict[str, RelayTotals]:
        """Relay every source until its outbox is empty (``readmodel relay --once``)."""
        results: dict[str, RelayTotals] = {}
        for relay in self.relays:
            results[relay.name] = drain_source(relay)
        for tenants in self.tenant_relays:
            results.update(tenants.drain())
        return results

    def run(self, stop: threading.Event) -> None:
        """Relay every source until ``stop`` is set."""
        threads = [
            threading.Thread(
                target=relay.run, args=(stop,), name=f"relay-{relay.name}", daemon=True
            )
            for relay in self.relays
        ]
        threads += [
            threading.Thread(
                target=tenants.run, args=(stop,), name=f"registry-{tenants.group}", daemon=True
            )
            for tenants in self.tenant_relays
        ]
        for thread in threads:
            thread.start()
        try:
            while any(t.is_alive() for t in threads) and not stop.is_set():
                stop.wait(0.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)

    def close(self) -> None:
        for tenants in self.tenant_relays:
            tenants.registry.close()
        self.log.close()
