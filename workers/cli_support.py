"""What the ``readmodel`` commands share: exit codes, consoles, options, error handling."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import psycopg
import typer
from pymongo.errors import ConnectionFailure
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from config import ConfigError, Settings, load_settings
from outbox.db import describe_db_error
from outbox.errors import ReadmodelError, SourceConfigError, SourceError
from workers.logs import configure_logging

if TYPE_CHECKING:
    from workers.runtime import Runtime

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3
EXIT_STUCK = 4
"""A worker whose handler stayed stuck past ``engine.stuck_exit_after``: restart it."""
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports a process SIGINT ended (128 + 2)

INTERRUPTED_CONNECTING = "interrupted (Ctrl-C) while connecting to the stores: nothing changed"
INTERRUPTED_CLOSING = (
    "interrupted (Ctrl-C) while closing the connections to the stores: the command had "
    "ended; what it did stays done"
)

T = TypeVar("T")

out = Console(emoji=False)  # "pos:x:" is a member source, not an emoji
err = Console(stderr=True, emoji=False)

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


def fail(message: str, code: int) -> typer.Exit:
    """Print ``error: message`` on stderr; returns the exit to raise. After a Ctrl-C in an
    :func:`interrupted_saying` block, an error (not its exit 130) is not printed: the block
    says what the Ctrl-C left, and the error is only what the Ctrl-C caused (a driver that
    saw its connection cut: "apply failed: ... the connection is closed")."""
    if code != EXIT_INTERRUPTED and ctrl_c_seen():
        return typer.Exit(code)
    err.print(
        f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True
    )
    return typer.Exit(code)


def load(path: Path | None, log_json: bool = False, log_level: str | None = None) -> Settings:
    """Settings from ``path`` (exit 2 when invalid), with logging configured."""
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None
    try:
        configure_logging(
            log_level or settings.logging.level,
            json_output=log_json or settings.logging.json_output,
        )
    except ValueError as exc:
        raise fail(f"--log-level: {exc}", EXIT_CONFIG) from None
    return settings


def guarded(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``func``, turning readmodel and driver errors into one clear line and an exit code."""
    try:
        return func(*args, **kwargs)
    except (ConfigError, SourceConfigError) as exc:
        raise fail(str(exc), EXIT_CONFIG) from None
    except SourceError as exc:
        raise fail(str(exc), EXIT_UNREACHABLE) from None
    except ReadmodelError as exc:
        # The read store refusing connections is "unreachable" too, not a runtime failure.
        code = EXIT_UNREACHABLE if _unreachable(exc) else EXIT_FAILURE
        raise fail(str(exc), code) from None
    except SQLAlchemyError as exc:
        # Data the database refused (a duplicate key, a constraint) fails the command (exit
        # 1); anything else means the database cannot serve it as it is (exit 3).
        refused = isinstance(exc, IntegrityError)
        raise fail(describe_db_error(exc), EXIT_FAILURE if refused else EXIT_UNREACHABLE) from None


_CONNECTION_ERRORS = (OperationalError, psycopg.OperationalError, ConnectionFailure)
"""A database that cannot be reached or lost the connection: SQLAlchemy's and psycopg's
"operational" errors, PyMongo's connection failures (a server selection timeout too)."""


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` was caused, at any depth, by a connection error (not by what the
    database refused), so a MongoDB store that cannot be reached exits 3 as a PostgreSQL
    one does."""
    cause = exc.__cause__
    for _ in range(8):  # a StoreError wrapping a StoreError...
        if cause is None:
            return False
        if isinstance(cause, _CONNECTION_ERRORS):
            return True
        cause = cause.__cause__
    return False


@contextmanager
def interrupted_saying(message: str) -> Iterator[None]:
    """Ctrl-C in the block exits 130 with ``error: message`` (what was and was not done):
    left to typer, a command ends with exit 130 and not a word. A Ctrl-C the block turned
    into another error, or kept (a driver that closes the connection the Ctrl-C cut, then
    fails to roll back on it: "the connection is closed"), exits so all the same, once the
    block has said what it had to: the block's own SIGINT handler saw it."""
    with _sigint_seen() as seen:
        try:
            yield
        except KeyboardInterrupt:
            pass
        except typer.Exit as exc:
            if not seen or exc.exit_code == EXIT_INTERRUPTED:  # said already, by a block within
                raise
        except BaseException:
            if not seen:
                raise
        else:
            if not seen:
                return
    err.print()
    raise fail(message, EXIT_INTERRUPTED) from None


_SEEN: list[list[bool]] = []
"""The lists of the :func:`_sigint_seen` blocks whose SIGINT handler is in place."""


def ctrl_c_seen() -> bool:
    """Whether a Ctrl-C came in the :func:`interrupted_saying` block being run."""
    return any(seen for seen in _SEEN)


class _QuietAfterCtrlC(logging.Filter):
    """Drops a driver's records once Ctrl-C came: what it says of the query the Ctrl-C
    cancelled ("query not terminated after cancellation", "the connection is closed") is
    not news, the block's line says what was left."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not ctrl_c_seen()


_QUIET = _QuietAfterCtrlC()
_DRIVER_LOGGERS = ("psycopg",)  # its records come from this logger itself, not children


@contextmanager
def _sigint_seen() -> Iterator[list[bool]]:
    """A list holding True once SIGINT came in the block, which it interrupts as Python's
    handler does (KeyboardInterrupt). Only Python's handler is stood in for: in a thread
    other than the main one, or when signals are a stop event
    (:func:`workers.signals.stop_on_signals`), nothing is seen here."""
    seen: list[bool] = []
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield seen
        return

    def handler(_signum: int, _frame: Any) -> None:
        seen.append(True)  # no lock taken: the main thread may hold any
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    _SEEN.append(seen)
    drivers = [logging.getLogger(name) for name in _DRIVER_LOGGERS]
    for logger in drivers:
        logger.addFilter(_QUIET)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _SEEN.remove(seen)
        for logger in drivers:
            logger.removeFilter(_QUIET)


def with_runtime(
    config: Path | None,
    action: Callable[[Runtime], T],
    *,
    create_tables: bool = True,
    report: Callable[[T], None] | None = None,
) -> T:
    """Build the runtime (log, stores, projections), run ``action(runtime)``, close it.
    ``create_tables=False`` for a command that only reads: it creates no read-model table
    or collection. ``report(result)`` prints what the action did before the stores are
    closed: a Ctrl-C while one is slow to let go ends the command, and what it did must have
    been said by then."""
    runtime = open_runtime(config, create_tables=create_tables)
    try:
        result: T = guarded(action, runtime)
        if report is not None:
            report(result)
        return result
    finally:
        close_runtime(runtime)


def open_runtime(config: Path | None, *, create_tables: bool = True) -> Runtime:
    """The runtime of ``config``, its stores checked to be migrated. A store slow to answer
    is waited for; Ctrl-C meanwhile exits 130 saying that nothing changed."""
    from workers.runtime import build_runtime

    with interrupted_saying(INTERRUPTED_CONNECTING):
        settings = load(config, log_level="warning")
        require_migrated(settings, config)
        runtime: Runtime = guarded(
            build_runtime, settings, create_tables=create_tables, migrate=False
        )
        return runtime


def close_runtime(runtime: Runtime) -> None:
    """Close ``runtime``; Ctrl-C while a store is slow to let go exits 130, saying that what
    the command did (it had ended, and said so) stays done."""
    with interrupted_saying(INTERRUPTED_CLOSING):
        runtime.close()


def migrate_hint(config: Path | None) -> str:
    """The command that migrates the read store of ``config``."""
    return "readmodel migrate" + (f" --config {config}" if config is not None else "")


def schema_problem(settings: Settings, config: Path | None) -> str | None:
    """Why a read store is not at the schema revision this readmodel needs, with the
    command to run; ``None`` when every one is."""
    from outbox.errors import SchemaOutdated
    from outbox.migrate import check_stores

    try:
        check_stores(settings)
    except SchemaOutdated as exc:
        return exc.remedy(migrate_hint(config))
    return None


def require_migrated(settings: Settings, config: Path | None) -> None:
    """Exit 2 unless every read store is at the schema revision this readmodel needs."""
    problem = guarded(schema_problem, settings, config)
    if problem is not None:
        raise fail(problem, EXIT_CONFIG)
