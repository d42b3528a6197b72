"""Operating commands: ``readmodel status``, ``readmodel health``, ``readmodel metrics``."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.live import Live
from rich.markup import escape

from config import Settings
from outbox.errors import ReadmodelError
from workers.cli_support import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_UNREACHABLE,
    ConfigOption,
    JsonOption,
    LogJsonOption,
    LogLevelOption,
    close_runtime,
    err,
    fail,
    guarded,
    load,
    out,
)
from workers.signals import stop_from_start_up, stop_on_signals
from workers.status_checks import Checks
from workers.status_tables import failures, status_tables

if TYPE_CHECKING:
    from workers.parts import Running

WatchOption = Annotated[
    bool, typer.Option("--watch", "-w", help="Refresh every --every seconds until Ctrl-C.")
]
EveryOption = Annotated[
    float, typer.Option("--every", min=0.2, help="Seconds between refreshes with --watch.")
]


PARENT_ENV = "_READMODEL_WORKER_PARENT_PID"  # not READMODEL_*: those are settings


def register(app: typer.Typer) -> None:
    from workers.cli_health import health

    app.command()(status)
    app.command()(health)
    app.command()(metrics)


def metrics_hooks(settings: Settings, **wiring: Any) -> list[Any]:
    """Metrics recording for this process (when metrics.dir is set): relay hooks to add."""
    from workers.metrics import instrument

    return guarded(instrument, settings, **wiring)  # a metrics.dir that cannot be: exit 2


def stop_with_parent(stop: threading.Event) -> None:
    """A worker started by ``work -p N`` stops when its parent process is gone."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return

    def watch() -> None:
        while not stop.wait(1.0):
            if os.getppid() != int(parent):
                stop.set()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def build_report_runtime(settings: Settings, check: Checks) -> Any:
    """The runtime, the check of its projections' sources started beside the report's read
    (a source only the log may know is asked of the log: one wait for a log that hangs)."""
    from workers.runtime import build_runtime

    runtime = build_runtime(settings, create_tables=False, check_sources=False)
    check.subscriptions(runtime)
    return runtime


def collect_report(runtime: Any, timeout: float | None, running: Running | None = None) -> Any:
    from workers.status import collect

    return collect(runtime, timeout=timeout, running=running)


def reported(read: Any) -> Any:
    """``read()``'s report; a read store that answers with an error (a missing table) exits
    1 naming it (one that cannot be reached is in the report)."""
    try:
        return read()
    except ReadmodelError as exc:
        raise fail(str(exc), EXIT_FAILURE) from None


# -- status --------------------------------------------------------------------------


def status(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    watch: WatchOption = False,
    every: EveryOption = 2.0,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", min=0.1, help="Seconds to wait for a source, the broker or the store."
        ),
    ] = 10.0,
) -> None:
    """What waits where: outbox backlog, projection lag, parked events, queue depth.

    Per source: undelivered outbox rows, the oldest one's age, the log head. Per
    projection and source: checkpoint (slowest partition), lag in events (the source's
    events its partitions have still to apply) and seconds (age of the oldest of them),
    parked events and the last error. The broker's ready, in progress (fetched by a
    worker, not acknowledged; Redis only), delayed and dead-lettered messages.

    Exit code 3 when a source, the broker or a read store (the event log's too) cannot be
    reached, or does not answer within --timeout (the figures of the others are printed
    first); otherwise 2 when
    a read store is not at the schema revision this readmodel needs (run 'readmodel
    migrate'), or the configuration is invalid, does not match a source's outbox table (no
    such table, a mapped column missing, a position column that is not unique), or refuses
    a tenant registry row (a bad row: no tenant id, a DSN refused; or a member whose
    database another source or tenant reads: a conflict).

    Ctrl-C exits 130 saying so; with --watch it is the way to end it (as SIGTERM): exit 0.
    """
    try:
        _status(config, as_json, watch, every, timeout)
    except KeyboardInterrupt:  # once --watch runs, Ctrl-C sets its stop event instead
        err.print()
        raise fail(STATUS_INTERRUPTED, EXIT_INTERRUPTED) from None


STATUS_INTERRUPTED = "interrupted (Ctrl-C) while reading the status: nothing reported"


def _status(config: Path | None, as_json: bool, watch: bool, every: float, timeout: float) -> None:
    """``status``, Ctrl-C left to the caller: the report is printed before the stores are
    closed, so that a Ctrl-C while one is slow to let go cannot lose it."""
    settings = load(config, log_level="warning")

    def outdated(problem: dict[str, str]) -> NoReturn:
        raise fail(problem["message"], EXIT_CONFIG)

    check = Checks(settings, config, timeout, outdated)
    runtime = guarded(check.after, build_report_runtime, settings, check)
    try:
        if watch:
            _watch(runtime, as_json, every, timeout, check)
            return
        report = reported(lambda: check.after(collect_report, runtime, timeout))
        check.settle()
        _print_status(report, as_json)
    finally:
        close_runtime(runtime)


def _print_status(report: Any, as_json: bool) -> None:
    """The report, its errors on stderr; exit 3 when something could not be reached, 2 for
    a source the configuration refuses."""
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        out.print(status_tables(report))
    for subject, error in failures(report):
        err.print(f"[red]{subject}:[/] {escape(error)}", highlight=False, soft_wrap=True)
    exit_if_a_store_is_unreachable(report)
    failed = [s for s in report.sources if s.error]
    if report.broker.error or any(not s.refused for s in failed):
        raise typer.Exit(EXIT_UNREACHABLE)
    if failed:  # members refused by the configuration (bad rows, conflicts): its to fix
        raise typer.Exit(EXIT_CONFIG)


def _watch(runtime: Any, as_json: bool, every: float, timeout: float, check: Checks) -> None:
    """Refresh until stopped; the schema check has its say on the first report. The parts
    a round leaves going (a store that hangs) are waited for by the next rounds, not started
    again: a hang holds one thread and one connection per part, however long one watches."""
    from workers.parts import Running

    stop = stop_on_signals()
    running = Running()
    if as_json:
        first: Checks | None = check
        while (
            report := _report_unless_stopped(runtime, timeout, stop, running, first)
        ) is not None:
            first = None
            print(json.dumps(report.as_dict()), flush=True)
            if stop.wait(every):
                return
        return
    shown = _report_unless_stopped(runtime, timeout, stop, running, check)
    if shown is None:
        return
    with Live(status_tables(shown, errors=True), console=out, auto_refresh=False) as live:
        while not stop.wait(every):
            report = _report_unless_stopped(runtime, timeout, stop, running)
            if report is None:
                return
            live.update(status_tables(report, errors=True), refresh=True)


def _report_unless_stopped(
    runtime: Any,
    timeout: float,
    stop: threading.Event,
    running: Running,
    check: Checks | None = None,
) -> Any | None:
    """The report, or ``None`` once Ctrl-C (or SIGTERM) came while it was read: a source
    that takes its whole --timeout to answer (a table lock) does not hold the exit. With
    ``check``, the schema check has its say before the report is given."""
    read: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            read["report"] = collect_report(runtime, timeout, running)
        except BaseException as exc:  # said below, unless stopped meanwhile (not from here)
            read["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="status-watch", daemon=True).start()
    while not done.wait(0.1):
        if stop.is_set():
            return None

    def result() -> Any:
        if "error" in read:
            raise read["error"]
        return read["report"]

    if check is None:
        return reported(result)
    report = reported(lambda: check.after(result))
    check.settle()
    return report


def exit_if_a_store_is_unreachable(report: Any) -> None:
    """Exit 3 naming each read store that could not be read (after the report of the rest:
    one store down hides nothing of the others)."""
    unreachable = report.unreachable_stores()
    if unreachable:
        raise fail("; ".join(s.error for s in unreachable), EXIT_UNREACHABLE)


# -- metrics -------------------------------------------------------------------------


def metrics(
    config: ConfigOption = None,
    port: Annotated[
        int | None,
        typer.Option("--port", "-p", min=1, max=65535, help="Port (default: metrics.port, 9464)."),
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Address to bind (default: metrics.host).")
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=0.1,
            help="Seconds a scrape waits for a source, the broker or a store, and the start "
            "for the stores' schema check.",
        ),
    ] = 5.0,
    log_json: LogJsonOption = False,
    log_level: LogLevelOption = None,
) -> None:
    """Serve Prometheus metrics on http://HOST:PORT/metrics until stopped.

    Counters and histograms come from every readmodel process sharing metrics.dir;
    lag, parked events, outbox backlog and queue depth are read at each scrape.
    """
    from workers.metrics import enable_recording, serve
    from workers.metrics_schema import SchemaGate
    from workers.runtime import build_runtime, check_subscriptions

    settings = load(config, log_json, log_level)
    # A signal while the server starts (a store slow to answer its schema check, --timeout)
    # exits it at once, code 0; serve() ends the start-up once it serves.
    with stop_from_start_up(settings.shutdown.grace.total_seconds()) as stop:
        # the sources are checked by the gate, within --timeout: a log that hangs on the
        # question (a source only it may know) must not hang the start
        runtime = guarded(build_runtime, settings, create_tables=False, check_sources=False)
        try:
            schema = SchemaGate(
                settings, config, stop, sources=lambda: check_subscriptions(runtime)
            )
            guarded(schema.start, timeout)  # a store that cannot be reached, or hangs: served 0
            if not guarded(enable_recording, settings):
                err.print(
                    "metrics.dir is not set: serving only figures read at scrape time (lag, "
                    "parked, queue depth), no counters from other processes",
                    highlight=False,
                )
            bind_host = host or settings.metrics.host
            bind_port = port or settings.metrics.port
            try:
                serve(runtime, bind_host, bind_port, stop, schema=schema.check, timeout=timeout)
            except OSError as exc:
                message = f"cannot serve metrics on {bind_host}:{bind_port}: {exc.strerror or exc}"
                raise fail(message, EXIT_FAILURE) from None
        finally:
            runtime.close()
    if schema.problem is not None:
        raise fail(schema.problem, EXIT_CONFIG)
