"""What ``health`` finds wrong in a :class:`~workers.status_report.Report`: unreachable
parts, lags, parked events and overdue handlers past their bounds, refused relays and
members. The report is read by :func:`workers.status.collect`; this only judges it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from outbox.log_rules import RuleOrigin
from outbox.status import SourceStatus
from workers.status_report import Report
from workers.status_tables import counted


@dataclass(frozen=True, slots=True)
class Problem:
    subject: str  # "source orders", "projection totals", "broker"
    message: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}"


def problems(
    report: Report,
    *,
    max_lag_events: int | None,
    max_lag_seconds: float | None,
    max_parked: int | None = None,
    max_overdue: int | None = None,
    origin: Callable[[str], RuleOrigin] | None = None,
) -> list[Problem]:
    """What makes the pipeline unhealthy: unreachable sources or broker, lags or parked
    events (a projection's, or a source's malformed outbox rows) past a bound, handlers
    running past ``engine.handler_timeout`` past a bound (or not known while bounded),
    sources whose relays are refused (their ``binary_ids`` is not the rule the log records;
    ``origin`` says where a source's setting was made, for the advice), members refused for
    a database another source or tenant reads (a conflict), members refused by the
    configuration otherwise (a bad registry row: ``refused``)."""
    out: list[Problem] = []
    for source in report.sources:
        subject = f"source {source.source}"
        if source.binary_ids_conflict:
            out.append(Problem(subject, _refusal(source, origin and origin(source.source))))
        if max_parked is not None and (source.parked or 0) > max_parked:
            rows = counted(source.parked or 0, "malformed outbox row")
            out.append(Problem(subject, f"{rows} parked (bound {max_parked})"))
        if source.error:
            out.append(Problem(subject, f"{source.refusal or 'unreachable'}: {source.error}"))
            continue
        if max_lag_events is not None and (source.undelivered or 0) > max_lag_events:
            out.append(
                Problem(
                    subject,
                    f"{source.undelivered} undelivered outbox rows (bound {max_lag_events})",
                )
            )
        age = source.oldest_undelivered_age_seconds
        if max_lag_seconds is not None and age is not None and age > max_lag_seconds:
            out.append(
                Problem(
                    subject,
                    f"oldest undelivered row is {age:.1f}s old (bound {max_lag_seconds:g}s)",
                )
            )
    for projection in report.projections:
        if max_parked is not None and projection.parked > max_parked:
            held = counted(projection.parked, "event")
            subject = f"projection {projection.projection}"
            out.append(Problem(subject, f"{held} parked (bound {max_parked})"))
        overdue = projection.handlers_overdue
        if max_overdue is not None and overdue is not None and overdue > max_overdue:
            handlers = counted(overdue, "handler")
            oldest = projection.oldest_overdue_seconds or 0.0
            out.append(
                Problem(
                    f"projection {projection.projection}",
                    f"{handlers} past engine.handler_timeout, the oldest for {oldest:.0f}s "
                    f"(bound {max_overdue}): its lane waits until it returns or its worker "
                    f"is restarted",
                )
            )
        for name, (events, seconds) in sorted(projection.by_source().items()):
            subject = f"projection {projection.projection} (source {name})"
            if max_lag_events is not None and events > max_lag_events:
                out.append(Problem(subject, f"lag {events} events (bound {max_lag_events})"))
            if max_lag_seconds is not None and seconds is not None and seconds > max_lag_seconds:
                out.append(Problem(subject, f"lag {seconds:.1f}s (bound {max_lag_seconds:g}s)"))
    if report.broker.error:
        out.append(Problem("broker", report.broker.error))
    elif max_overdue is not None and any(p.handlers_overdue is None for p in report.projections):
        out.append(Problem("broker", _overdue_unknown(report.broker.broker)))
    unread = report.unreachable_stores()
    log_down = any(s.store == "default" for s in unread)
    for store in unread:
        if log_down and store.store != "default":  # not read: its lag needs the log
            out.append(Problem(f"store {store.store}", store.error or "not read"))
        else:
            out.append(Problem(f"store {store.store}", f"unreachable: {store.error}"))
    return out


def _overdue_unknown(kind: str) -> str:
    why = (
        "could not be read from the broker's Redis"
        if kind == "redis"
        else f"are not known on a {kind} broker (workers record them in a Redis broker only)"
    )
    return f"handlers past engine.handler_timeout {why}, so max_overdue cannot be checked"


def _refusal(source: SourceStatus, origin: RuleOrigin | None) -> str:
    """Why the source's relays are refused, and what to set where: the environment variable
    that set ``binary_ids``, else its table in the config file."""
    recorded, configured = source.binary_ids, source.binary_ids_config
    if origin is None:
        where, fix = "in this config", f'set binary_ids = "{recorded}"'
    elif origin.variable is not None:
        where, fix = f"({origin})", f"set {origin.variable}={recorded}"
    else:
        where, fix = f"({origin})", f'set binary_ids = "{recorded}" in {origin}'
    return (
        f"relays refused: binary_ids = {configured!r} {where} is not the rule the event log "
        f"records, {recorded!r}, so nothing is relayed ({fix}, or switch the rule: "
        f"readmodel outbox binary-ids {source.source} {configured})"
    )
