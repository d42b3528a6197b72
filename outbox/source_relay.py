"""One source relayed: moves its committed outbox rows into the event log while it leads.

Each step claims a batch (rows stay locked in the source), appends it to the
log in one log transaction, then deletes or marks the rows and commits the
source transaction. A crash between the two commits leaves the rows in the
outbox; the next leader claims them again and the log skips them by event id.
Separate from :mod:`outbox.relay` (every source of a configuration, each in its thread)
because the tenant registries' relays (:mod:`outbox.tenant_relays`) run it too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from config import RelaySettings
from outbox.db import redact_dsn
from outbox.errors import (
    BinaryIdsConflict,
    LogError,
    ReadmodelError,
    SourceConfigError,
    SourceError,
)
from outbox.log import AppendResult, EventLog, LogRejectedError
from outbox.log_refusals import append_one_by_one
from outbox.log_rules import RuleOrigin, adopt_rule
from outbox.rows import LogRecord, MalformedRow, decode_rows, id_type_clash
from outbox.source import OutboxSource
from outbox.source_groups import source_key
from outbox.sources import source_failure

logger = structlog.get_logger("readmodel.relay")


class RelayHooks:
    """Extension point: subclass and override; every hook is a no-op by default."""

    def after_append(self, source: str, result: AppendResult) -> None:
        """Called after a batch is in the log, once the source acknowledged it or failed to
        (its rows then come back as duplicates)."""

    def on_leadership(self, source: str, leading: bool) -> None:
        """Called when this relay becomes, or stops being, the source's active relay."""


KEPT_ERRORS = 100
IDLE_STEP = 0.001
"""Seconds: the shortest wait of an idle relay whose ``poll_min`` is 0, doubled from there."""


@dataclass(slots=True)
class RelayTotals:
    relayed: int = 0
    duplicates: int = 0
    parked: int = 0
    batches: int = 0
    errors: list[str] = field(default_factory=list)
    """The latest :data:`KEPT_ERRORS` failures, oldest first (a relay that fails for days
    must not keep them all)."""
    skipped: bool = False
    refused: bool = False
    """The source was not relayed because of its configuration (its ``binary_ids`` is not
    the rule the log records; an outbox table that does not match it: a table or mapped
    column missing, a position column not unique; a bad registry row; a registry member
    reading the database and outbox table of another source or tenant), not because a
    database failed."""
    unlisted: bool = False
    """Not relayed at all: a registry that cannot be read, a row of it refused or waiting,
    a member it does not list (no totals to show, only the errors)."""

    def add_error(self, message: str) -> None:
        self.errors.append(message)
        del self.errors[:-KEPT_ERRORS]


class SourceRelay:
    """Relays one source. Usable from plain Python: :meth:`step`, :meth:`drain`, :meth:`run`."""

    def __init__(
        self,
        source: OutboxSource,
        log: EventLog,
        settings: RelaySettings | None = None,
        hooks: Iterable[RelayHooks] = (),
        *,
        origin: RuleOrigin | None = None,
    ) -> None:
        self.source = source
        self.log = log
        self.settings = settings or RelaySettings()
        self.hooks = list(hooks)
        self.origin = origin or RuleOrigin(source_key(source.name))
        """Where the source's ``binary_ids`` is set, named when it is refused."""
        self.totals = RelayTotals()
        self._was_leading = False
        self._refusal_logged: tuple[str, str] | None = None  # (setting, recorded), logged once

    @property
    def name(self) -> str:
        return self.source.name

    def step(self) -> int:
        """Relay one batch; returns how many outbox rows it consumed (0 when none waited)."""
        source = self.source
        rows = source.claim(source.settings.batch_size)
        if rows and source.settings.binary_ids != "text":
            rows = self._reclaim_if_retyped(rows)
        if not rows:
            source.release()
            return 0
        try:
            records, malformed = decode_rows(
                rows,
                source=source.name,
                column_names=source.column_names,
                default_tenant=source.settings.tenant,
                max_payload_bytes=source.settings.max_payload_bytes,
                id_formats=source.id_formats,
                id_hints=source.id_hints,
                timestamp_unit=source.settings.timestamp_unit,
            )
            result = self._append(records, malformed)
        except BaseException:
            source.release()
            raise
        try:
            source.acknowledge([row[0] for row in rows])
        finally:
            # The batch is in the log whether or not the source took the acknowledgement
            # (if not, its rows come back and are counted as duplicates).
            self._count(result)
            for hook in self.hooks:
                hook.after_append(self.name, result)
        return len(rows)

    def _reclaim_if_retyped(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """``rows``, or, when an id value's type contradicts its column's decision (an
        ``ALTER TABLE`` since the types were read), the batch claimed again after reading
        the column types again; once per claim: a value that still contradicts is parked."""
        source = self.source
        clash = id_type_clash(rows, source.column_names, source.id_formats)
        if clash is None:
            return rows
        before = dict(source.id_formats)
        source.release()
        source.reread_columns()
        logger.warning(
            "id column types changed: binary_ids rule re-read",
            source=self.name,
            binary_ids=source.settings.binary_ids,
            clash=clash,
            before=before,
            after=source.id_formats,
        )
        return source.claim(source.settings.batch_size)

    def _append(self, records: list[LogRecord], malformed: list[MalformedRow]) -> AppendResult:
        try:
            try:
                return self.log.append(self.name, records, malformed, binary_ids=self._rule)
            except LogRejectedError:
                return append_one_by_one(self.log, self.name, records, malformed, self._rule)
        except BinaryIdsConflict as exc:  # the rule was switched while this relay led
            raise self.origin.conflict(exc) from None

    @property
    def _rule(self) -> str | None:
        return self.source.binary_ids_rule

    def _count(self, result: AppendResult) -> None:
        totals = self.totals
        totals.relayed += result.appended
        totals.duplicates += result.duplicates
        totals.parked += result.parked
        totals.batches += 1
        if result.parked:
            logger.warning("outbox rows parked", source=self.name, parked=result.parked)

    def drain(self) -> RelayTotals:
        """Relay until the outbox is empty, if this relay can lead the source."""
        if not self._lead(once=True):
            self.totals.skipped = True
            return self.totals
        batch = self.source.settings.batch_size
        while self.step() >= batch:
            if not self._lead():  # renews a lease (MongoDB) on a long drain
                break
        self.source.purge_dispatched()
        return self.totals

    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set: lead or stand by, poll adaptively, wake on NOTIFY."""
        settings = self.source.settings
        poll_min = settings.poll_min.total_seconds()
        poll_max = settings.poll_max.total_seconds()
        linger = self.settings.linger.total_seconds()
        interval = poll_min
        error_backoff = 0.5
        next_purge = 0.0
        while not stop.is_set():
            try:
                if not self._lead():
                    stop.wait(self.settings.standby_retry.total_seconds())
                    continue
                handled = self.step()
                error_backoff = 0.5
                self._refusal_logged = None  # relaying: a later refusal is news again
                if time.monotonic() >= next_purge:
                    purged = self.source.purge_dispatched()
                    if purged:
                        logger.info("purged dispatched rows", source=self.name, rows=purged)
                    next_purge = time.monotonic() + self.settings.purge_every.total_seconds()
                if handled >= settings.batch_size:
                    continue
                if handled and linger > 0:
                    stop.wait(linger)
                    continue
                # Idle: double the wait up to poll_max, from at least IDLE_STEP (from a
                # poll_min of 0 it stayed 0: an idle relay claimed without pause, for ever).
                interval = (
                    poll_min if handled else min(max(interval * 2, poll_min, IDLE_STEP), poll_max)
                )
                self.source.wait(interval, stop)
            except (SourceError, LogError) as exc:
                self._failed(exc)
                stop.wait(error_backoff)
                error_backoff = min(error_backoff * 2, 5.0)
            except Exception as exc:  # a DSN the driver refuses: reported, retried, never fatal
                self._failed(source_failure(self.name, exc))
                stop.wait(error_backoff)
                error_backoff = min(error_backoff * 2, 5.0)
        self._step_down()

    def _lead(self, *, once: bool = False) -> bool:
        leading = self.source.try_lead_once() if once else self.source.try_lead()
        if leading and not self._was_leading:
            self._adopt_rule()
        if leading != self._was_leading:
            self._was_leading = leading
            if leading:
                logger.info(
                    "leading source",
                    source=self.name,
                    url=redact_dsn(self.source.settings.url, location=True),
                    binary_ids=self.source.settings.binary_ids,
                )
            else:
                logger.warning("lost the lead of the source", source=self.name)
            for hook in self.hooks:
                hook.on_leadership(self.name, leading)
        if not leading:
            logger.debug("standing by: another relay leads this source", source=self.name)
        return leading

    def _adopt_rule(self) -> None:
        """Before relaying as the new leader: refuse a ``binary_ids`` other than the rule the
        log records for the source (:class:`BinaryIdsConflict`); record it where the log
        holds the source's events but no rule (appended before rules were recorded)."""
        rule = self._rule
        if rule is None:
            return
        try:
            recorded = adopt_rule(self.log.engine, self.name, rule)
        except BinaryIdsConflict as exc:
            raise self.origin.conflict(exc) from None
        if recorded:
            logger.warning(
                "binary_ids rule recorded for a source logged before rules were",
                source=self.name,
                binary_ids=rule,
                log_head=self.log.head(self.name),
            )

    def _failed(self, exc: ReadmodelError) -> None:
        self.totals.add_error(str(exc))
        if isinstance(exc, BinaryIdsConflict):
            self._refused(exc)
        elif isinstance(exc, SourceConfigError):
            self._misconfigured(exc)
        else:
            logger.warning("relay step failed; retrying", source=self.name, error=str(exc))
        lose = getattr(self.source, "lose_leadership", None)
        if lose is not None:
            lose()
        if self._was_leading:
            self._was_leading = False
            for hook in self.hooks:
                hook.on_leadership(self.name, False)

    def _refused(self, exc: BinaryIdsConflict) -> None:
        """Log the refusal as an error once while it stays the same (the relay retries every
        few seconds until the rule or the setting changes), its repeats at debug level."""
        refusal = (exc.setting, exc.recorded)
        log = logger.debug if refusal == self._refusal_logged else logger.error
        self._refusal_logged = refusal
        log(
            "not relaying the source: its binary_ids is not the rule the log records",
            source=self.name,
            binary_ids=exc.setting,
            recorded=exc.recorded,
            error=str(exc),
        )

    def _misconfigured(self, exc: SourceConfigError) -> None:
        """Log, as an error once while it stays the same, that the outbox table does not
        match the configuration (retried: an ``ALTER TABLE`` or ``outbox init`` fixes it)."""
        refusal = ("table", str(exc))
        log = logger.debug if refusal == self._refusal_logged else logger.error
        self._refusal_logged = refusal
        log(
            "not relaying the source: its outbox table does not match the configuration",
            source=self.name,
            error=str(exc),
        )

    def _step_down(self) -> None:
        try:
            self.source.close()
        except Exception as exc:
            logger.warning("closing the source failed", source=self.name, error=str(exc))
        if self._was_leading:
            self._was_leading = False
            logger.info("released source", source=self.name)


def drain_source(relay: SourceRelay) -> RelayTotals:
    """``relay.drain()``, any failure recorded as that source's error; the source closed."""
    try:
        return relay.drain()
    except (BinaryIdsConflict, SourceConfigError) as exc:
        relay.totals.add_error(str(exc))
        relay.totals.refused = True
    except ReadmodelError as exc:
        relay.totals.add_error(str(exc))
    except Exception as exc:
        relay.totals.add_error(str(source_failure(relay.name, exc)))
    finally:
        try:
            relay.source.close()
        except Exception as exc:
            relay.totals.add_error(str(source_failure(relay.name, exc)))
    return relay.totals
