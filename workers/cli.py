"""The ``readmodel`` command: parses arguments, builds objects from settings, prints results.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration (an outbox table
that does not match its source's mapping, a bad tenant registry row too, or a member reading
another source's database: a conflict), 3 a database could not be reached (3 wins when both
happen), 130 interrupted (Ctrl-C), with a line saying what was and was not done; relay,
work, sweeper, run and metrics (till stopped) stop on Ctrl-C instead, starting or running
(exit 0).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import typer

from config import Settings
from outbox.db import redact_text
from workers.cli_binary_ids import binary_ids_command
from workers.cli_help import reflow_help
from workers.cli_migrate import migrate
from workers.cli_ops import PARENT_ENV, stop_with_parent
from workers.cli_ops import metrics_hooks as _metrics_hooks
from workers.cli_ops import register as register_ops
from workers.cli_outbox import outbox_init
from workers.cli_parked import parked_app
from workers.cli_query import query_command
from workers.cli_reference import register as register_reference
from workers.cli_relay import register as register_relay
from workers.cli_replay import replay_command
from workers.cli_secret import secret_app
from workers.cli_support import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_STUCK,
    EXIT_UNREACHABLE,
    INTERRUPTED_CONNECTING,
    ConfigOption,
    LogJsonOption,
    LogLevelOption,
    close_runtime,
    fail,
    guarded,
    interrupted_saying,
    load,
    out,
    require_migrated,
)
from workers.signals import started, stop_from_start_up

if TYPE_CHECKING:
    from workers.overdue_board import OverdueBoard
    from workers.runtime import Runtime

logger = structlog.get_logger("readmodel.cli")

INTERRUPTED_CATCHING_UP = (
    "interrupted (Ctrl-C) before catching up: what was relayed and applied so far stays done "
    "(each batch commits whole); run it again to go on"
)

app = typer.Typer(
    help="readmodel: relay outbox events into a durable log and build read models from it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
outbox_app = typer.Typer(help="Outbox tables in the service databases.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")
outbox_app.command("init")(outbox_init)
outbox_app.command("binary-ids")(binary_ids_command)
app.add_typer(parked_app, name="parked")
app.add_typer(secret_app, name="secret")
app.command()(migrate)
register_ops(app)  # status, health, metrics
register_reference(app)  # simulate, verify, demo, reference init
app.command("query")(query_command)
app.command("replay")(replay_command)
register_relay(app)


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
    re-triggered, so work lost by the broker is picked up again. Exit code 4 when a
    handler stays stuck past engine.stuck_exit_after (restart the worker).
    """
    from workers.broker import is_in_process

    settings = load(config, log_json, log_level)
    if is_in_process(settings.broker):
        raise fail(
            "broker.url is memory:// (in-process): use 'readmodel run', or set broker.url to "
            "redis://... or amqp://...",
            EXIT_CONFIG,
        )
    grace = settings.shutdown.grace.total_seconds()
    # A signal while a process starts (a store slow to answer) exits it at once, code 0.
    with stop_from_start_up(None if processes > 1 else grace) as stop:
        require_migrated(settings, config)
        if processes > 1:
            code = _spawn_workers(config, processes, threads, log_json, log_level, grace, stop)
            raise typer.Exit(code)
        _runwith_runtime(settings, "worker", stop, threads=threads)


def _spawn_workers(
    config: Path | None,
    processes: int,
    threads: int,
    log_json: bool,
    log_level: str | None,
    grace: float,
    stop: threading.Event,
) -> int:
    """Start ``processes`` single-process workers and wait until ``stop`` (SIGTERM/SIGINT),
    then pass it on. A child still running ``grace`` + :data:`CHILD_EXIT_MARGIN` seconds
    after it was told to stop (its own grace exit could not run: stopped, stuck in the
    kernel) is killed. A child the signal killed (-SIGTERM) was still starting, before its
    handlers were in place (importing Python): it had taken no work, a clean stop."""
    command = [sys.executable, "-m", "workers.cli", "work", "--processes", "1"]
    command += ["--threads", str(threads)]
    if config is not None:
        command += ["--config", str(config)]
    if log_json:
        command.append("--log-json")
    if log_level:
        command += ["--log-level", log_level]
    env = {**os.environ, PARENT_ENV: str(os.getpid())}  # children stop if this process dies
    started()  # from here on a signal is passed on to the children
    # Own sessions: a signal to this process group reaches the children once, through here.
    children = [
        subprocess.Popen(command, env=env, start_new_session=True) for _ in range(processes)
    ]
    died = None
    while died is None and not stop.wait(0.5):
        died = next((child for child in children if child.poll() is not None), None)
    if died is not None:  # a supervisor (systemd, Kubernetes, honcho) restarts the whole set
        logger.error(
            "worker process exited; stopping the others",
            pid=died.pid,
            code=died.returncode,
            running=sum(child.poll() is None for child in children),
        )
    for child in children:
        if child.poll() is None:
            child.terminate()
    codes = _wait_for_children(children, grace + CHILD_EXIT_MARGIN)
    if died is not None and died.returncode in (EXIT_CONFIG, EXIT_UNREACHABLE, EXIT_STUCK):
        return died.returncode
    if died is not None or any(code not in (0, -signal.SIGTERM) for code in codes):
        return EXIT_FAILURE  # another signal's death (SIGKILL) is a failure all the same
    return 0


CHILD_EXIT_MARGIN = 5.0
"""Seconds past ``shutdown.grace`` that ``work -p N`` waits for a child told to stop."""


def _wait_for_children(children: list[Any], bound: float) -> list[int]:
    """The children's exit codes, each killed (SIGKILL) if still running after ``bound``
    seconds: the parent's stop is bounded as each child's is."""
    deadline = time.monotonic() + bound
    codes = []
    for child in children:
        try:
            codes.append(child.wait(timeout=max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            logger.error(
                "worker process did not stop in time; killing it",
                pid=child.pid,
                waited_seconds=round(bound, 1),
            )
            child.kill()
            codes.append(child.wait())
    return codes


def _require_broker(settings: Settings) -> None:
    """Exit at once when the broker refuses us (a wrong password, an unknown vhost):
    Dramatiq's consumers would retry forever behind "worker started". A broker that cannot
    be reached yet (starting beside the workers) is waited for, as Dramatiq does, and said
    in the line of each later attempt (:mod:`workers.broker_log`)."""
    from workers.broker_log import broker_address, unreachable_reason
    from workers.queues import broker_check

    refusal, error = broker_check(settings.broker)
    if refusal is not None:
        raise fail(refusal, EXIT_UNREACHABLE)
    if error is not None:
        reason = unreachable_reason(error) or f"{type(error).__name__}: {error}"
        logger.warning(
            redact_text(f"broker unreachable: {broker_address(settings.broker.url)}: {reason}")
            + "; waiting for it"
        )


def _runwith_runtime(
    settings: Settings, mode: str, stop: threading.Event, threads: int = 8
) -> None:
    """Build the runtime and run ``mode`` until ``stop`` (from :func:`stop_from_start_up`,
    so that a signal while the runtime is built exits at once, code 0)."""
    from workers.broker import make_broker
    from workers.gc_tuning import tune_collector
    from workers.runtime import build_runtime
    from workers.stuck_exit import HandlerStuck
    from workers.worker import ShutdownTimeout, run_pipeline, run_sweeper, run_worker

    _require_broker(settings)
    runtime = guarded(build_runtime, settings, migrate=False, threads=threads)
    broker = make_broker(settings.broker)
    relay_hooks = _metrics_hooks(settings, runtime=runtime, broker=broker)
    board = _overdue_board(settings, runtime) if mode != "sweeper" else None
    stop_with_parent(stop)
    restore_collector = tune_collector()
    try:
        if mode == "worker":
            run_worker(runtime, broker, stop, threads=threads)
        elif mode == "sweeper":
            run_sweeper(runtime, broker, stop)
        else:
            run_pipeline(runtime, broker, stop, threads=threads, relay_hooks=relay_hooks)
    except ShutdownTimeout as exc:
        raise fail(str(exc), EXIT_FAILURE) from None
    except HandlerStuck as exc:
        raise fail(str(exc), EXIT_STUCK) from None
    finally:
        restore_collector()
        if board is not None:
            board.close()
        broker.close()
        runtime.close()


def _overdue_board(settings: Settings, runtime: Runtime) -> OverdueBoard | None:
    """On a Redis broker, the record of this process's handlers past engine.handler_timeout
    that ``status`` and ``health`` read (:mod:`workers.overdue_board`); ``None`` otherwise."""
    from workers.overdue_board import BoardHooks, OverdueBoard
    from workers.queues import broker_kind

    if broker_kind(settings.broker) != "redis":
        return None
    board = OverdueBoard(settings.broker)
    runtime.engine.hooks = BoardHooks(runtime.engine.hooks, board)
    return board


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
    """Relay and apply projections in this one process (scripts, tests, the embedded default).

    With --until-caught-up, exit code 3 when a source or tenant registry cannot be reached
    or read; otherwise 2 when a source is refused by the configuration (a bad tenant registry
    row or a conflict, as relay --once).
    """
    settings = load(config, log_json, log_level)
    if not until_caught_up:
        with stop_from_start_up(settings.shutdown.grace.total_seconds()) as stop:
            require_migrated(settings, config)
            _runwith_runtime(settings, "pipeline", stop, threads=threads)
        return
    from workers.runtime import build_runtime
    from workers.worker import run_until_caught_up

    with interrupted_saying(INTERRUPTED_CONNECTING):
        require_migrated(settings, config)
        runtime = guarded(build_runtime, settings, migrate=False)
    try:
        with interrupted_saying(INTERRUPTED_CATCHING_UP):
            relayed, applied = guarded(run_until_caught_up, runtime)
        out.print(f"caught up: relayed {relayed}, applied {applied}", highlight=False)
    except TimeoutError as exc:
        raise fail(str(exc), EXIT_FAILURE) from None
    finally:
        close_runtime(runtime)  # once said: a Ctrl-C while it closes loses nothing


@app.command()
def sweeper(
    config: ConfigOption = None, log_json: LogJsonOption = False, log_level: LogLevelOption = None
) -> None:
    """Re-trigger projection lanes whose checkpoint trails the log head (runs until stopped)."""
    settings = load(config, log_json, log_level)
    with stop_from_start_up(settings.shutdown.grace.total_seconds()) as stop:
        require_migrated(settings, config)
        _runwith_runtime(settings, "sweeper", stop)


@app.command()
def version() -> None:
    """Print readmodel's version."""
    from importlib.metadata import version as package_version

    print(package_version("readmodel"))


reflow_help(app)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
