"""What waits where: per source, undelivered outbox rows, the log head and parked rows, and
the ``binary_ids`` rule the log records for it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from config import Settings, SourceSettings
from outbox.db import redact_dsn
from outbox.errors import SourceConfigError, SourceError
from outbox.log import EventLog
from outbox.log_rules import recorded_rules
from outbox.source_groups import group_of
from outbox.sources import open_source, source_failure, source_kind


@dataclass(frozen=True, slots=True)
class SourceStatus:
    source: str
    engine: str
    url: str
    undelivered: int | None
    oldest_undelivered_age_seconds: float | None
    log_head: int | None
    """``None`` when the log's store could not be read; so is ``parked``."""
    parked: int | None
    error: str | None = None
    binary_ids: str | None = None
    """The ``binary_ids`` rule the log records for the source (``None``: none yet)."""
    binary_ids_config: str | None = None
    """The ``binary_ids`` this configuration gives the source's relays (``None``: a MongoDB
    source, where it does not apply, or a registry member that could not be listed). When
    both are set and differ, the relays of this configuration are refused."""
    database_conflict: bool = False
    """A registry member refused because another source or tenant reads its database and
    outbox table (``error`` says which): a configuration conflict, not an unreachable
    source."""
    refused: bool = False
    """A source refused by the configuration (an outbox table that does not match it; a
    registry member's bad row, or a database conflict): not an unreachable source
    (``status`` exits 2 for it)."""
    removed: bool = False
    """A member its tenant registry no longer lists (or a static member no longer in the
    configuration), shown while it has parked rows."""

    @property
    def binary_ids_conflict(self) -> bool:
        """This configuration's relays of the source are refused: its ``binary_ids`` is not
        the rule the log records."""
        recorded, configured = self.binary_ids, self.binary_ids_config
        return recorded is not None and configured is not None and recorded != configured

    @property
    def refusal(self) -> str | None:
        """How the configuration refuses the member, as ``status`` and ``health`` label it:
        ``"conflict"`` (a database another source or tenant reads), ``"refused"`` (a bad
        registry row), or ``None``."""
        if self.database_conflict:
            return "conflict"
        return "refused" if self.refused else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "binary_ids_conflict": self.binary_ids_conflict}


def source_statuses(settings: Settings, log: EventLog) -> list[SourceStatus]:
    """One :class:`SourceStatus` per configured source and registry member; an unreachable
    source, a bad registry row or an unreadable registry reports its error."""
    from outbox.keepers import last_appends
    from outbox.source_list import list_sources

    heads = log.heads()
    rules = recorded_rules(log.engine)
    listed = list_sources(settings, appends=last_appends(log.engine))
    parked = log.parked_outbox_counts()
    statuses = [
        source_status(name, settings, heads.get(name, 0), parked.get(name, 0), member)
        for name, member in listed.sources.items()
    ]
    statuses += [
        unlisted_status(
            u.source,
            u.url,
            u.error,
            heads.get(u.source, 0),
            0,
            conflict=u.conflict,
            refused=u.refused,
        )
        for u in listed.unlisted
    ]
    return with_rules(statuses, rules, listed.sources)


def with_rules(
    statuses: list[SourceStatus], rules: dict[str, str], sources: dict[str, SourceSettings]
) -> list[SourceStatus]:
    """``statuses`` with the rule the log records (``rules``) and the setting the configured
    ``sources`` give, each."""
    return [
        replace(
            s,
            binary_ids=rules.get(s.source),
            binary_ids_config=configured_rule(sources[s.source]) if s.source in sources else None,
        )
        for s in statuses
    ]


def configured_rule(settings: SourceSettings) -> str | None:
    """The ``binary_ids`` a relay of ``settings`` has (``None``: MongoDB, it does not apply)."""
    return None if source_kind(settings.url) == "mongodb" else settings.binary_ids


def unlisted_status(
    name: str,
    url: str,
    error: str,
    log_head: int | None,
    parked: int | None,
    *,
    conflict: bool = False,
    refused: bool = False,
) -> SourceStatus:
    """A registry member that could not be listed (``url``: the registry's; ``conflict``:
    refused for a database another source or tenant reads; ``refused``: by the
    configuration, a bad row or a conflict)."""
    return SourceStatus(
        name,
        source_kind(url),
        url,
        None,
        None,
        log_head,
        parked,
        error,
        database_conflict=conflict,
        refused=refused or conflict,
    )


def display_url(name: str, url: str) -> str:
    """``url`` for status output, password masked; a tenant's (a member of a source group)
    by where it is only, without user or query, as it is logged."""
    return redact_dsn(url, location=group_of(name) is not None)


def source_status(
    name: str,
    settings: Settings,
    log_head: int,
    parked: int,
    source_settings: SourceSettings | None = None,
) -> SourceStatus:
    """What waits in one source's outbox (the log figures are read by the caller);
    ``source_settings`` for a registry member, which ``settings.sources`` lacks."""
    source_settings = source_settings or settings.sources[name]
    undelivered: int | None = None
    age: float | None = None
    error: str | None = None
    refused = False
    missing = _missing_file(source_settings.url)
    try:
        if missing is not None:  # connecting would create it: status only reads
            raise SourceError(f"source {name!r}: the database file {missing} does not exist")
        source = open_source(name, source_settings)
        try:
            stats = source.pending()
            undelivered, age = stats.undelivered, stats.oldest_age_seconds
        finally:
            source.close()
    except Exception as exc:  # that source's error, whatever it is; the others are reported
        error = str(source_failure(name, exc))
        refused = isinstance(exc, SourceConfigError)
    return SourceStatus(
        source=name,
        engine=source_kind(source_settings.url),
        url=display_url(name, source_settings.url),
        undelivered=undelivered,
        oldest_undelivered_age_seconds=age,
        log_head=log_head,
        parked=parked,
        error=error,
        refused=refused,
    )


def _missing_file(url: str) -> str | None:
    """The path of a SQLite database file that is not there (``None``: another engine, an
    in-memory database or a file that exists)."""
    if not url.lower().startswith("sqlite"):
        return None
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:") or Path(database).exists():
        return None
    return database
