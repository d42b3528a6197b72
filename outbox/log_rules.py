"""The ``binary_ids`` rule the event log records per source, on its head row.

``binary_ids`` decides how a binary id column becomes a source's text aggregate ids, so a
source relayed under two rules has its aggregates keyed two ways: per-aggregate order and
projections split. The log therefore records the rule in ``rm_log_heads.binary_ids``
with a source's first events: every append checks it on the head row it locks anyway
(:mod:`outbox.log`), a relay taking the lead checks it first (:func:`adopt_rule`), and only
``readmodel outbox binary-ids`` changes it (:func:`switch_rule`). NULL means none recorded
yet: the source has no event in the log (rows parked under a rule key no aggregate), or its
events were appended before rules were recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from config import Settings
from outbox.db import describe_db_error
from outbox.errors import BinaryIdsConflict, LogError
from outbox.schema import log_heads
from outbox.source_groups import group_of


@dataclass(frozen=True, slots=True)
class RuleOrigin:
    """Where a source's ``binary_ids`` setting is made, for messages: its table in the config
    file, or the environment variable that overrides the file."""

    table: str  # [sources.auth], [tenants.pos.source]
    config_file: str | None = None
    variable: str | None = None

    def __str__(self) -> str:
        if self.variable is not None:
            return f"environment variable {self.variable}"
        return self.table + (f" in {self.config_file}" if self.config_file else "")

    def conflict(self, refused: BinaryIdsConflict) -> BinaryIdsConflict:
        """``refused``, naming this origin."""
        return BinaryIdsConflict(
            refused.source,
            refused.setting,
            refused.recorded,
            where=str(self),
            variable=self.variable,
            config_file=self.config_file,
        )


def rule_origin(settings: Settings, source: str) -> RuleOrigin:
    """Where ``settings`` set the ``binary_ids`` of ``source``: a configured source, a tenant
    registry's group or one of its members."""
    group = group_of(source)
    if source in settings.sources:
        table = f'[sources."{source}"]' if group else f"[sources.{source}]"
        path: tuple[str, ...] = ("sources", source, "binary_ids")
    else:
        registry = source if source in settings.tenants else group or source
        table = f"[tenants.{registry}.source]"
        path = ("tenants", registry, "source", "binary_ids")
    return RuleOrigin(table, settings.config_file, settings.variable_for(*path))


def check_rule(source: str, rule: str | None, recorded: str | None) -> None:
    """Raise :class:`BinaryIdsConflict` when ``source``'s head row records another rule than
    ``rule`` (``None`` on either side: nothing to compare)."""
    if rule is not None and recorded is not None and recorded != rule:
        raise BinaryIdsConflict(source, rule, recorded)


def insert_head(kind: str, source: str) -> sa.Executable:
    """Make ``source``'s head row (head 0, no rule) unless it exists; ``kind`` is the log's
    engine, ``postgresql`` or ``sqlite``."""
    if kind == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(log_heads).values(source=source, head=0).on_conflict_do_nothing()


def adopt_rule(engine: sa.Engine, source: str, rule: str) -> bool:
    """Check ``rule`` against the one the log records for ``source``, for a relay taking the
    lead: raises :class:`BinaryIdsConflict` when it records another. A source whose events
    were appended before rules were recorded gets ``rule``: returns True then (the events of
    an older readmodel were keyed by ``text``, what it always did, unless a readmodel that
    had the setting but did not record it relayed them: the relay's setting is the best
    guess, and it logs what it recorded). A source without events records its rule with
    its first events."""
    try:
        with _writer(engine).begin() as conn:
            row = conn.execute(_locked_rule(source)).first()
            if row is None:
                return False
            check_rule(source, rule, row.binary_ids)
            if row.binary_ids is None and row.head > 0:
                conn.execute(
                    log_heads.update().where(log_heads.c.source == source).values(binary_ids=rule)
                )
                return True
            return False
    except SQLAlchemyError as exc:
        raise LogError(
            f"reading the binary_ids rule of source {source!r} from the event log failed: "
            f"{describe_db_error(exc)}"
        ) from exc


def switch_rule(engine: sa.Engine, source: str, rule: str) -> str | None:
    """Record ``rule`` for ``source`` whatever the log recorded (the operator switches on
    purpose); returns the rule recorded before. Appends made under any other rule are
    refused from this commit on. The head row's ``updated_at`` is left as it is: it is the
    time of the source's last append, which decides which of two registries' members keeps
    a database they both list (:mod:`outbox.registry_overlaps`)."""
    try:
        with _writer(engine).begin() as conn:
            conn.execute(insert_head(conn.dialect.name, source))
            before = conn.execute(_locked_rule(source)).one().binary_ids
            if before != rule:  # updated_at stays: it is the last append's time
                conn.execute(
                    log_heads.update().where(log_heads.c.source == source).values(binary_ids=rule)
                )
    except SQLAlchemyError as exc:
        raise LogError(
            f"recording the binary_ids rule of source {source!r} in the event log failed: "
            f"{describe_db_error(exc)}"
        ) from exc
    return before


def recorded_rules(engine: sa.Engine) -> dict[str, str]:
    """Source -> the rule the log records for it (sources without one left out)."""
    query = sa.select(log_heads.c.source, log_heads.c.binary_ids).where(
        log_heads.c.binary_ids.is_not(None)
    )
    with engine.connect() as conn:
        return {source: rule for source, rule in conn.execute(query)}


def _locked_rule(source: str) -> sa.Select[tuple[str | None, int]]:
    return (
        sa.select(log_heads.c.binary_ids, log_heads.c.head)
        .where(log_heads.c.source == source)
        .with_for_update()
    )


def _writer(engine: sa.Engine) -> sa.Engine:
    """SQLite takes the write lock at BEGIN: a deferred transaction that read the row could
    not upgrade while a relay appends."""
    return engine.execution_options(sqlite_begin="IMMEDIATE")


def unrecorded_sources(engine: sa.Engine) -> list[str]:
    """The sources whose log holds events but records no rule (appended by a readmodel from
    before rules were recorded): each one's first relay records its own setting."""
    query = (
        sa.select(log_heads.c.source)
        .where(log_heads.c.binary_ids.is_(None), log_heads.c.head > 0)
        .order_by(log_heads.c.source)
    )
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())
