"""``readmodel relay``: move committed outbox rows into the event log, one active relay per
source; until stopped, or ``--once`` (drain every source, then exit).

The running relay stops on SIGTERM or Ctrl-C, at once while it still starts (exit 0, no row
claimed: :func:`workers.signals.stop_from_start_up`); ``--once`` exits 130 on Ctrl-C, saying
what it left.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from config import Settings
from workers.cli_ops import metrics_hooks as _metrics_hooks
from workers.cli_support import (
    EXIT_CONFIG,
    EXIT_UNREACHABLE,
    INTERRUPTED_CONNECTING,
    ConfigOption,
    LogJsonOption,
    LogLevelOption,
    err,
    fail,
    guarded,
    interrupted_saying,
    load,
    out,
    require_migrated,
)
from workers.signals import started, stop_from_start_up

INTERRUPTED_RELAYING = (
    "interrupted (Ctrl-C) while relaying: the rows relayed so far stay in the log, the others "
    "stay in their outbox for the next relay (a row cut half-way is read again, logged once)"
)


def relay(
    config: ConfigOption = None,
    once: Annotated[
        bool, typer.Option("--once", help="Drain every source, then exit (scripts, cron, tests).")
    ] = False,
    source: Annotated[
        list[str] | None,
        typer.Option("--source", "-s", help="Relay only this source (repeatable)."),
    ] = None,
    log_json: LogJsonOption = False,
    log_level: LogLevelOption = None,
) -> None:
    """Move committed outbox rows into the event log, one active relay per source.

    Start it twice for a hot standby: the second process waits and takes over a
    source within seconds when the first dies.

    With --once, exit code 3 when a source or tenant registry cannot be reached or read (or a
    registry member waits for another registry); otherwise 2 when a source is refused by the
    configuration (its binary_ids; an outbox table that does not match it: no such table, a
    mapped column missing, a position column that is not unique; a bad tenant registry row: no
    tenant id, a DSN refused, or a member reading the database of another source or tenant: a
    conflict, as status), or when --source names a member its tenant registry does not list.
    """
    from outbox.relay import Relay

    settings = load(config, log_json, log_level)
    if not settings.sources and not settings.tenants:
        raise fail(
            "no sources configured: add a [sources.NAME] (or [tenants.NAME]) table to the config",
            EXIT_CONFIG,
        )
    from outbox.source_groups import group_of

    relayable = {*settings.sources, *settings.tenants}  # a registry's group: all its members
    unknown = [
        name
        for name in source or ()
        if name not in relayable and group_of(name) not in settings.tenants  # pos:acme
    ]
    if unknown:
        known = ", ".join(sorted(relayable))
        raise fail(f"unknown source {unknown[0]!r} (known: {known})", EXIT_CONFIG)
    if once:
        _relay_once(settings, config, source)
        return
    # A signal while the relay starts (a store slow to answer) exits it at once, code 0.
    with stop_from_start_up(settings.shutdown.grace.total_seconds()) as stop:
        require_migrated(settings, config)
        hooks, publisher_close = _publisher_hooks(settings)
        hooks += _metrics_hooks(settings)
        runner = guarded(Relay, settings, sources=source, hooks=hooks)
        try:
            started()  # leads and claims from here on: a signal now is a graceful stop
            runner.run(stop)
        finally:
            runner.close()
            publisher_close()


def _relay_once(settings: Settings, config: Path | None, source: list[str] | None) -> None:
    """``relay --once``: drain every source and say what each did; Ctrl-C exits 130."""
    from outbox.relay import Relay

    with interrupted_saying(INTERRUPTED_CONNECTING):
        require_migrated(settings, config)
        hooks, publisher_close = _publisher_hooks(settings)
        hooks += _metrics_hooks(settings)
        runner = guarded(Relay, settings, sources=source, hooks=hooks)
    try:
        # what each source did is said before the Ctrl-C (a driver may turn it into
        # an error on the connection it cut: "the connection is closed")
        with interrupted_saying(INTERRUPTED_RELAYING):
            code = _said_drained(guarded(runner.drain))
        if code:
            raise typer.Exit(code)
    finally:
        runner.close()
        publisher_close()


def _said_drained(results: dict[str, Any]) -> int:
    """Print what ``relay --once`` did per source; the exit code: 3 when one failed, 2 when
    one was refused by the configuration, else 0."""
    failed = refused = False
    for name, totals in results.items():
        if totals.skipped:
            err.print(f"{name}: another relay is active; skipped")
        for problem in totals.errors:
            failed = failed or not totals.refused
            refused = refused or totals.refused
            err.print(f"[red]{name}:[/] {escape(problem)}", highlight=False, soft_wrap=True)
        if totals.unlisted:  # nothing relayed or tried: its error says it all
            continue
        out.print(
            f"{name}: relayed {totals.relayed}, duplicates {totals.duplicates}, "
            f"parked {totals.parked}",
            highlight=False,
        )
    return EXIT_UNREACHABLE if failed else EXIT_CONFIG if refused else 0


def _publisher_hooks(settings: Settings) -> tuple[list[Any], Any]:
    """With projections and a shared broker, the relay tells workers about new events at once
    (otherwise they find the work when they sweep)."""
    from workers.broker import is_in_process

    if not settings.projections or is_in_process(settings.broker):
        return [], lambda: None
    from workers.actors import Actors, Publisher
    from workers.broker import make_broker
    from workers.runtime import build_runtime

    runtime = guarded(build_runtime, settings, create_tables=False)
    broker = make_broker(settings.broker)

    def close() -> None:
        broker.close()
        runtime.close()

    return [Publisher(Actors(broker, runtime))], close


def register(app: typer.Typer) -> None:
    app.command()(relay)
