"""The ``readmodel`` command: parses arguments, builds objects from settings, prints results.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration,
3 a database could not be reached.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from config import ConfigError, Settings, load_settings
from outbox.db import describe_db_error
from outbox.errors import ReadmodelError, SourceError
from projections.store import HandlerFailed
from workers.logs import configure_logging

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3

app = typer.Typer(
    help="readmodel: relay outbox events into a durable log and build read models from it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
outbox_app = typer.Typer(help="Outbox tables in the service databases.", no_args_is_help=True)
parked_app = typer.Typer(
    help="Parked outbox rows and projection events: list, show, retry, skip.", no_args_is_help=True
)
app.add_typer(outbox_app, name="outbox")
app.add_typer(parked_app, name="parked")

out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML settings file (default: $READMODEL_CONFIG, else embedded SQLite defaults).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
LogJsonOption = Annotated[
    bool, typer.Option("--log-json", help="Log one JSON object per line (for production).")
]
LogLevelOption = Annotated[
    str | None, typer.Option("--log-level", help="debug, info, warning or error.")
]


def _fail(message: str, code: int) -> typer.Exit:
    err.print(
        f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True
    )
    return typer.Exit(code)


def _settings(path: Path | None, log_json: bool = False, log_level: str | None = None) -> Settings:
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_CONFIG) from None
    configure_logging(
        log_level or settings.logging.level, json_output=log_json or settings.logging.json_output
    )
    return settings


def _guarded(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``func``, turning readmodel and driver errors into one clear line and an exit code."""
    try:
        return func(*args, **kwargs)
    except ConfigError as exc:
        raise _fail(str(exc), EXIT_CONFIG) from None
    except SourceError as exc:
        raise _fail(str(exc), EXIT_UNREACHABLE) from None
    except ReadmodelError as exc:
        # The read store refusing connections is "unreachable" too, not a runtime failure.
        unreachable = isinstance(exc.__cause__, OperationalError)
        raise _fail(str(exc), EXIT_UNREACHABLE if unreachable else EXIT_FAILURE) from None
    except SQLAlchemyError as exc:
        raise _fail(describe_db_error(exc), EXIT_UNREACHABLE) from None


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def _handler(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return stop


@app.command()
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
    """
    from outbox.relay import Relay

    settings = _settings(config, log_json, log_level)
    if not settings.sources:
        raise _fail("no sources configured: add a [sources.NAME] table to the config", EXIT_CONFIG)
    unknown = [name for name in source or () if name not in settings.sources]
    if unknown:
        known = ", ".join(sorted(settings.sources))
        raise _fail(f"unknown source {unknown[0]!r} (known: {known})", EXIT_CONFIG)
    hooks, publisher_close = _publisher_hooks(settings)
    runner = _guarded(Relay, settings, sources=source, hooks=hooks)
    try:
        if once:
            results = _guarded(runner.drain)
            failed = False
            for name, totals in results.items():
                if totals.skipped:
                    err.print(f"{name}: another relay is active; skipped")
                for problem in totals.errors:
                    failed = True
                    err.print(f"[red]{name}:[/] {escape(problem)}", highlight=False, soft_wrap=True)
                out.print(
                    f"{name}: relayed {totals.relayed}, duplicates {totals.duplicates}, "
                    f"parked {totals.parked}",
                    highlight=False,
                )
            if failed:
                raise typer.Exit(EXIT_UNREACHABLE)
            return
        runner.run(_stop_on_signals())
    finally:
        runner.close()
        publisher_close()


def _publisher_hooks(settings: Settings) -> tuple[list[Any], Any]:
    """With projections and a shared broker, the relay tells workers about new events at once
    (otherwise they find the work when they sweep)."""
    from workers.broker import is_in_process

    if not settings.projections or is_in_process(settings.broker):
        return [], lambda: None
    from workers.actors import Actors, Publisher
    from workers.broker import make_broker
    from workers.runtime import build_runtime

    runtime = _guarded(build_runtime, settings, create_tables=False)
    broker = make_broker(settings.broker)

    def close() -> None:
        broker.close()
        runtime.close()

    return [Publisher(Actors(broker, runtime))], close


ProcessesOption = Annotated[
    int, typer.Option("--processes", "-p", min=1, help="Worker processes to start.")
]
ThreadsOption = Annotated[int, typer.Option("--threads", "-t", min=1, help="Threads per process.")]


@app.command()
def work(
    config: ConfigOption = None,
    processes: ProcessesOption = 1,
    threads: ThreadsOption = 8,
    log_json: LogJsonOption = False,
    log_level: LogLevelOption = None,
) -> None:
    """Run the projection workers (Dramatiq) against the configured broker.

    Each process also sweeps: lanes whose checkpoint trails the log head are
    re-triggered, so work lost by the broker is picked up again.
    """
    from workers.broker import is_in_process

    settings = _settings(config, log_json, log_level)
    if is_in_process(settings.broker):
        raise _fail(
            "broker.url is memory:// (in-process): use 'readmodel run', or set broker.url to "
            "redis://... or amqp://...",
            EXIT_CONFIG,
        )
    if processes > 1:
        raise typer.Exit(_spawn_workers(config, processes, threads, log_json, log_level))
    _run_with_runtime(settings, "worker", threads=threads)


def _spawn_workers(
    config: Path | None, processes: int, threads: int, log_json: bool, log_level: str | None
) -> int:
    """Start ``processes`` single-process workers and wait; SIGTERM/SIGINT are passed on."""
    import subprocess

    command = [sys.executable, "-m", "workers.cli", "work", "--processes", "1"]
    command += ["--threads", str(threads)]
    if config is not None:
        command += ["--config", str(config)]
    if log_json:
        command.append("--log-json")
    if log_level:
        command += ["--log-level", log_level]
    children = [subprocess.Popen(command) for _ in range(processes)]
    stop = _stop_on_signals()
    while not stop.wait(0.5):
        if all(child.poll() is not None for child in children):
            break
    for child in children:
        if child.poll() is None:
            child.terminate()
    return max(child.wait() for child in children)


def _run_with_runtime(settings: Settings, mode: str, threads: int = 8) -> None:
    from workers.broker import make_broker
    from workers.runtime import build_runtime
    from workers.worker import run_pipeline, run_sweeper, run_worker

    runtime = _guarded(build_runtime, settings)
    broker = make_broker(settings.broker)
    stop = _stop_on_signals()
    try:
        if mode == "worker":
            run_worker(runtime, broker, stop, threads=threads)
        elif mode == "sweeper":
            run_sweeper(runtime, broker, stop)
        else:
            run_pipeline(runtime, broker, stop, threads=threads)
    finally:
        broker.close()
        runtime.close()


@app.command()
def run(
    config: ConfigOption = None,
    until_caught_up: Annotated[
        bool,
        typer.Option(
            "--until-caught-up",
            help="Exit once every outbox is empty and every projection has reached the log head.",
        ),
    ] = False,
    threads: ThreadsOption = 8,
    log_json: LogJsonOption = False,
    log_level: LogLevelOption = None,
) -> None:
    """Relay and apply projections in this one process (scripts, tests, the embedded default)."""
    settings = _settings(config, log_json, log_level)
    if not until_caught_up:
        _run_with_runtime(settings, "pipeline", threads=threads)
        return
    from workers.runtime import build_runtime
    from workers.worker import run_until_caught_up

    runtime = _guarded(build_runtime, settings)
    try:
        relayed, applied = _guarded(run_until_caught_up, runtime)
    except TimeoutError as exc:
        raise _fail(str(exc), EXIT_FAILURE) from None
    finally:
        runtime.close()
    out.print(f"caught up: relayed {relayed}, applied {applied}", highlight=False)


@app.command()
def sweeper(
    config: ConfigOption = None, log_json: LogJsonOption = False, log_level: LogLevelOption = None
) -> None:
    """Re-trigger projection lanes whose checkpoint trails the log head (runs until stopped)."""
    settings = _settings(config, log_json, log_level)
    _run_with_runtime(settings, "sweeper")


@app.command()
def status(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Per source: undelivered outbox rows, oldest undelivered age, log head, parked rows."""
    from outbox.log import EventLog
    from outbox.status import source_statuses

    settings = _settings(config, log_level="warning")
    log = EventLog(settings.store.url)
    try:
        _guarded(log.create_tables)
        rows = _guarded(source_statuses, settings, log)
    finally:
        log.close()
    if as_json:
        print(json.dumps({"sources": [row.as_dict() for row in rows]}, indent=2))
    else:
        table = Table(title="sources")
        for column in ("source", "engine", "undelivered", "oldest age", "log head", "parked"):
            table.add_column(column, justify="left" if column in {"source", "engine"} else "right")
        for row in rows:
            table.add_row(
                row.source,
                row.engine,
                "?" if row.undelivered is None else str(row.undelivered),
                _age(row.oldest_undelivered_age_seconds),
                str(row.log_head),
                str(row.parked),
            )
        out.print(table)
        for row in rows:
            if row.error:
                err.print(
                    f"[red]{row.source}:[/] {escape(row.error)}", highlight=False, soft_wrap=True
                )
    if any(row.error for row in rows):
        raise typer.Exit(EXIT_UNREACHABLE)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


@outbox_app.command("init")
def outbox_init(
    source: Annotated[str, typer.Option("--source", "-s", help="Source name from the config.")],
    config: ConfigOption = None,
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the DDL instead of applying it.")
    ] = False,
) -> None:
    """Create the outbox table, its indexes and (PostgreSQL) the NOTIFY trigger for a source."""
    from outbox.sources import open_source

    settings = _settings(config, log_level="warning")
    if source not in settings.sources:
        known = ", ".join(sorted(settings.sources)) or "none configured"
        raise _fail(f"unknown source {source!r} (known: {known})", EXIT_CONFIG)
    outbox_source = open_source(source, settings.sources[source])
    try:
        statements = outbox_source.ddl()
        if print_only:
            for statement in statements:
                print(statement.rstrip() + ";\n")
            return

        def apply() -> None:
            try:
                with outbox_source.engine.begin() as conn:
                    for statement in statements:
                        conn.exec_driver_sql(statement)
            except SQLAlchemyError as exc:
                raise SourceError(
                    f"source {source!r} ({outbox_source.display_url}): {describe_db_error(exc)}"
                ) from exc

        _guarded(apply)
        out.print(f"{source}: outbox table {settings.sources[source].table!r} is ready")
    finally:
        outbox_source.close()


EntryId = Annotated[
    str,
    typer.Argument(
        help="An id from 'readmodel parked list': a number for an outbox row, "
        "e<number> for a projection event."
    ),
]


@parked_app.command("list")
def parked_list(
    config: ConfigOption = None,
    source: Annotated[str | None, typer.Option("--source", "-s", help="Only this source.")] = None,
    projection: Annotated[
        str | None, typer.Option("--projection", help="Only this projection's events.")
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="Include retried and skipped entries.")
    ] = False,
    limit: Annotated[int, typer.Option(help="At most this many entries.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """List parked outbox rows (malformed) and projection events (handler kept failing)."""
    status = None if show_all else "parked"

    def collect(runtime: Any) -> list[dict[str, Any]]:
        from outbox.parking import ParkedEvents

        rows: list[dict[str, Any]] = []
        if projection is None:
            for e in ParkedEvents(runtime.log.engine).list(
                source=source, status=status, limit=limit
            ):
                rows.append({**e.as_dict(), "ref": str(e.id)})
        for event in runtime.engine.parked(projection, status):
            if source is None or event.source == source:
                rows.append({**event.as_dict(), "kind": "projection_event", "ref": f"e{event.id}"})
        return rows[:limit]

    entries = _with_runtime(config, collect)
    if as_json:
        print(json.dumps(entries, indent=2, default=str))
        return
    table = Table(title="parked")
    for column in ("id", "kind", "source", "projection", "event id", "reason", "status"):
        table.add_column(column)
    for e in entries:
        table.add_row(
            e["ref"],
            e["kind"],
            e["source"],
            e.get("projection") or "-",
            escape(e.get("event_id") or "-"),
            escape(e["reason"]),
            e["status"],
        )
    out.print(table)


@parked_app.command("show")
def parked_show(entry_id: EntryId, config: ConfigOption = None) -> None:
    """Show one parked entry in full: reason, traceback or raw row, attempts."""
    entry = _with_runtime(config, lambda runtime: _find_entry(runtime, entry_id))
    print(json.dumps(entry, indent=2, default=str))


@parked_app.command("retry")
def parked_retry(entry_id: EntryId, config: ConfigOption = None) -> None:
    """Apply a parked projection event again, with every later parked event of its aggregate,
    in order; on success the aggregate flows normally again."""

    def retry(runtime: Any) -> int:
        kind, number = _parse_entry(entry_id)
        if kind != "e":
            raise ReadmodelError(
                f"{entry_id} is a malformed outbox row: it cannot be applied; "
                "fix the row in the service and write it again, or skip it"
            )
        event = _projection_entry(runtime, number)
        return runtime.engine.retry(event)

    try:
        count = _with_runtime(config, retry)
    except HandlerFailed as failed:
        raise _fail(f"{entry_id} failed again and stays parked: {failed}", EXIT_FAILURE) from None
    out.print(f"{entry_id}: applied {count} parked event(s); the aggregate flows again")


@parked_app.command("skip")
def parked_skip(entry_id: EntryId, config: ConfigOption = None) -> None:
    """Mark a parked entry skipped (it stays listed with --all). For a projection event, the
    events of its aggregate that were held behind it are then applied in order."""

    def skip(runtime: Any) -> int:
        from outbox.parking import ParkedEvents

        kind, number = _parse_entry(entry_id)
        if kind == "e":
            return runtime.engine.skip(_projection_entry(runtime, number))
        if not ParkedEvents(runtime.log.engine).skip(number):
            raise ReadmodelError(f"no parked entry {entry_id}")
        return 0

    try:
        applied = _with_runtime(config, skip)
    except HandlerFailed as failed:
        raise _fail(
            f"{entry_id} skipped, but a later event of its aggregate failed again and stays "
            f"parked: {failed}",
            EXIT_FAILURE,
        ) from None
    suffix = f"; applied {applied} held event(s) of its aggregate" if applied else ""
    out.print(f"{entry_id}: skipped{suffix}")


def _parse_entry(entry_id: str) -> tuple[str, int]:
    text = entry_id.strip().lower()
    kind = "e" if text.startswith("e") else "o"
    try:
        return kind, int(text.lstrip("eo"))
    except ValueError:
        raise _fail(
            f"{entry_id!r} is not a parked entry id (e.g. 12 or e12)", EXIT_CONFIG
        ) from None


def _projection_entry(runtime: Any, number: int) -> Any:
    for event in runtime.engine.parked(None, None):
        if event.id == number:
            return event
    raise ReadmodelError(f"no parked projection event e{number}")


def _find_entry(runtime: Any, entry_id: str) -> dict[str, Any]:
    from outbox.parking import ParkedEvents

    kind, number = _parse_entry(entry_id)
    if kind == "e":
        return {**_projection_entry(runtime, number).as_dict(), "kind": "projection_event"}
    entry = ParkedEvents(runtime.log.engine).get(number)
    if entry is None:
        raise ReadmodelError(f"no parked entry with id {entry_id}")
    return entry.as_dict()


def _with_runtime(config: Path | None, action: Any) -> Any:
    from workers.runtime import build_runtime

    settings = _settings(config, log_level="warning")
    runtime = _guarded(build_runtime, settings)
    try:
        return _guarded(action, runtime)
    finally:
        runtime.close()


@app.command()
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the demo keeps its SQLite databases.")
    ] = Path("readmodel-demo"),
    events: Annotated[int, typer.Option(help="How many events the demo services write.")] = 5000,
) -> None:
    """Run the pipeline on embedded defaults: SQLite service databases and read store."""
    from workers.demo import run_demo

    configure_logging("warning")
    code = _guarded(run_demo, directory, events, out)
    raise typer.Exit(code)


@app.command()
def version() -> None:
    """Print readmodel's version."""
    from importlib.metadata import version as package_version

    print(package_version("readmodel"))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
