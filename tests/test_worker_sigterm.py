"""SIGTERM to a worker whose main thread is writing a log line: the signal's handling must
not wait on the write's lock (structlog's, not reentrant) that its own thread holds.

The worker's stderr is a pipe the test filled before starting it, so its first line,
"worker started", blocks in the write until the test reads: the moment a CI run caught by
chance (SIGTERM 2 ms after "worker started"; no "stopping", SIGKILLed 20 s later)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.broker_helpers import wait_until
from tests.cli_helpers import run_cli, write_config
from tests.full_pipe_helpers import FullPipe

WRITE_SYSCALLS = {"1", "64"}  # write(2) on x86_64, aarch64
GRACE = 2.0  # shutdown.grace, seconds


def _config(
    tmp_path: Path,
    broker: dict[str, Any],
    sqlite_database: Callable[[], str],
    grace: float = GRACE,
) -> Path:
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": sqlite_database()},
            "broker": broker,
            "sources": {"bank": {"url": sqlite_database()}},
            "shutdown": {"grace": f"{grace:g}s"},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    return config


def _writing_to_stderr(pid: int) -> bool:
    """The main thread of ``pid`` waits in a write to its stderr."""
    try:
        call = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return len(call) > 1 and call[0] in WRITE_SYSCALLS and call[1] == "0x2"


def _catches_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


@contextmanager
def _blocked_worker(config: Path) -> Iterator[tuple[subprocess.Popen[bytes], FullPipe]]:
    """A ``work`` process stuck writing its first line ("worker started") to a full stderr,
    its signal handlers in place."""
    stderr = FullPipe()
    stderr.fill()
    command = [sys.executable, "-m", "workers.cli", "work", "--config", str(config), "-t", "1"]
    worker = subprocess.Popen(
        command, stdout=stderr.write_end, stderr=stderr.write_end, start_new_session=True
    )
    stderr.close_write_end()
    try:
        assert wait_until(lambda: _writing_to_stderr(worker.pid), 60), worker.poll()
        assert _catches_sigterm(worker.pid), "blocked in a write before its handlers were set"
        yield worker, stderr
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        stderr.close()  # read to the end, then closed


def _wait(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def test_sigterm_while_the_worker_writes_worker_started_stops_it(
    broker_for: Callable[[str], dict[str, Any]],
    sqlite_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, broker_for("redis"), sqlite_database)
    with _blocked_worker(config) as (worker, stderr):
        os.killpg(worker.pid, signal.SIGTERM)
        time.sleep(0.5)  # the signal is in before the line is out
        stderr.drain()
        code = _wait(worker, 30)
        assert code == 0, f"exit {code} (None: running 30 s after SIGTERM)\n{stderr.text()}"
        output = stderr.text()
        assert "worker started" in output
        assert "stopping: finishing the batch in hand" in output
        assert "worker stopped" in output


def test_a_worker_held_in_a_write_to_a_stderr_nobody_reads_exits_after_the_grace(
    broker_for: Callable[[str], dict[str, Any]],
    sqlite_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    """A log reader that stopped reading holds the main thread in its write for good: the
    grace still bounds the exit (1), without the message it cannot write."""
    config = _config(tmp_path, broker_for("redis"), sqlite_database)
    with _blocked_worker(config) as (worker, stderr):
        signalled = time.monotonic()
        os.killpg(worker.pid, signal.SIGTERM)
        code = _wait(worker, 30)
        took = time.monotonic() - signalled
        assert code == 1, f"exit {code} (None: running 30 s after SIGTERM)"
        assert took < GRACE + 8, took
        stderr.drain()
        assert "worker stopped" not in stderr.text()


def test_a_second_sigterm_exits_at_once_while_the_first_waits_to_say_stopping(
    broker_for: Callable[[str], dict[str, Any]],
    sqlite_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    """The first signal's "stopping" line waits behind the main thread's write to a full
    stderr; a second signal must not wait behind it: it exits at once (128 + SIGTERM), long
    before the grace would."""
    config = _config(tmp_path, broker_for("redis"), sqlite_database, grace=120)
    with _blocked_worker(config) as (worker, _):
        os.killpg(worker.pid, signal.SIGTERM)
        time.sleep(0.5)  # the first signal's line is waiting for the write's lock
        signalled = time.monotonic()
        os.killpg(worker.pid, signal.SIGTERM)
        code = _wait(worker, 30)
        took = time.monotonic() - signalled
        assert code == 128 + signal.SIGTERM, f"exit {code} (None: running 30 s after)"
        assert took < 10, took


def test_sigterm_stops_a_worker_whose_log_reader_went_away(
    broker_for: Callable[[str], dict[str, Any]],
    sqlite_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    """Its "stopping" line fails (EPIPE: the reader of its stderr is gone); the worker stops
    all the same, at once, not at the end of the grace."""
    config = _config(tmp_path, broker_for("redis"), sqlite_database, grace=120)
    command = [sys.executable, "-m", "workers.cli", "work", "--config", str(config), "-t", "1"]
    worker = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        assert worker.stdout is not None
        for line in worker.stdout:
            if b"worker started" in line:
                break
        worker.stdout.close()  # the log reader goes away
        signalled = time.monotonic()
        os.killpg(worker.pid, signal.SIGTERM)
        code = _wait(worker, 30)
        took = time.monotonic() - signalled
        assert code is not None, "running 30 s after SIGTERM"
        assert took < 15, (took, code)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
