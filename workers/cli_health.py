"""``readmodel health``: the probe for containers, a verdict on the status report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from config import Settings
from workers.cli_ops import (
    build_report_runtime,
    collect_report,
    exit_if_a_store_is_unreachable,
    reported,
)
from workers.cli_support import (
    EXIT_FAILURE,
    ConfigOption,
    JsonOption,
    err,
    guarded,
    interrupted_saying,
    load,
    out,
)
from workers.status_checks import Checks
from workers.status_tables import counted

HEALTH_INTERRUPTED = "interrupted (Ctrl-C) while checking: no verdict"
"""A probe cut short must not pass for healthy: exit 130, nothing on stdout."""


def health(
    config: ConfigOption = None,
    max_lag_events: Annotated[
        int | None,
        typer.Option(
            "--max-lag-events",
            min=0,
            help="Fail when a projection trails the log head, or an outbox holds, more events "
            "than this (default: health.max_lag_events, unbounded).",
            show_default=False,
        ),
    ] = None,
    max_lag_seconds: Annotated[
        float | None,
        typer.Option(
            "--max-lag-seconds",
            min=0,
            help="Fail when the oldest unapplied log event, or undelivered outbox row, is older "
            "than this (default: health.max_lag_seconds, 300).",
            show_default=False,
        ),
    ] = None,
    max_parked: Annotated[
        int | None,
        typer.Option(
            "--max-parked",
            min=0,
            help="Fail when a projection holds, or a source's outbox has parked, more events "
            "than this (default: health.max_parked, unbounded).",
            show_default=False,
        ),
    ] = None,
    max_overdue: Annotated[
        int | None,
        typer.Option(
            "--max-overdue",
            min=0,
            help="Fail when more handlers of a projection than this run past "
            "engine.handler_timeout (default: health.max_overdue, unchecked; needs a Redis "
            "broker).",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for any one answer.")
    ] = 1.5,
    as_json: JsonOption = False,
) -> None:
    """Probe for containers: are sources and broker reachable and lags within bounds?

    Exit 0 when every source and the broker answer and every lag (and parked count, and
    count of handlers past engine.handler_timeout) is within its bound; 1 naming the source
    or projection and the figure otherwise, when a source's binary_ids in this config is
    not the rule the event log records (its relays are refused), or when a read store is
    not at the schema revision this readmodel needs (run `readmodel migrate`); 3 when a
    read store cannot be reached or does not answer within --timeout (every problem is
    named, the sources and broker still checked, even when it is the event log's store).
    Ctrl-C before the verdict exits 130 with none (a probe cut short is not healthy).
    """
    from outbox.log_rules import rule_origin
    from workers.health import problems

    settings = load(config, log_level="error")
    events = settings.health.max_lag_events if max_lag_events is None else max_lag_events
    bounds: dict[str, Any] = {
        "max_lag_events": events,
        "max_lag_seconds": _seconds_bound(settings, max_lag_seconds),
        "max_parked": settings.health.max_parked if max_parked is None else max_parked,
        "max_overdue": settings.health.max_overdue if max_overdue is None else max_overdue,
    }
    with interrupted_saying(HEALTH_INTERRUPTED):  # until the verdict is known: none printed
        report = _read(settings, config, timeout, as_json)
        found = problems(report, **bounds, origin=lambda source: rule_origin(settings, source))
    if as_json:
        document = {
            "healthy": not found,
            "problems": [{"subject": p.subject, "message": p.message} for p in found],
            **bounds,
            "status": report.as_dict(),
        }
        print(json.dumps(document, indent=2))
    elif found:
        for problem in found:
            err.print(f"[red]unhealthy:[/] {escape(str(problem))}", highlight=False, soft_wrap=True)
    exit_if_a_store_is_unreachable(report)
    if not as_json and not found:
        out.print(
            f"healthy: {counted(len(report.sources), 'source')}, "
            f"{counted(len(report.projections), 'projection')} within bounds",
            highlight=False,
        )
    if found:
        raise typer.Exit(EXIT_FAILURE)


def _seconds_bound(settings: Settings, given: float | None) -> float | None:
    if given is not None:
        return given
    bound = settings.health.max_lag_seconds
    return None if bound is None else bound.total_seconds()


def _read(settings: Settings, config: Path | None, timeout: float, as_json: bool) -> Any:
    """The status report, its stores closed; a read store not at the schema revision this
    readmodel needs exits 1 (unhealthy) naming it."""

    def outdated(problem: dict[str, str]) -> NoReturn:
        if as_json:
            print(json.dumps({"healthy": False, "problems": [problem], "status": None}, indent=2))
        else:
            err.print(
                f"[red]unhealthy:[/] {escape(problem['subject'])}: {escape(problem['message'])}",
                highlight=False,
                soft_wrap=True,
            )
        raise typer.Exit(EXIT_FAILURE)

    check = Checks(settings, config, timeout, outdated)
    runtime = guarded(check.after, build_report_runtime, settings, check)
    try:
        report = reported(lambda: check.after(collect_report, runtime, timeout))
    finally:
        runtime.close()
    check.settle()
    return report
