"""A worker whose handler is stuck exits 4 even when its stderr blocks.

The handler-timeout watchdog logged its warning ("handler exceeded handler_timeout") before
it went on to interrupt the handler and, past ``engine.stuck_exit_after``, to call the
stuck exit: with a stderr pipe nobody reads (a log collector that stopped), that write
blocked the watchdog for good, and the stuck worker never exited. Its log lines are now
written aside, so nothing on the way to the exit waits on stderr for long."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from outbox.log import EventLog
from tests.cache_helpers import append
from tests.cli_helpers import run_cli, write_config
from tests.full_pipe_helpers import FullPipe
from tests.projection_fixtures import HANG_HOW, HANG_ON, HANG_PORT

HUNG = "acct-1"
EXIT_STUCK = 4


class SilentServer:
    """Accepts connections and never answers: a handler reading from it blocks for good."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_a_stuck_worker_whose_stderr_blocks_still_exits_4(
    broker_for: Callable[[str], dict[str, Any]],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    silent_server: SilentServer,
    tmp_path: Path,
) -> None:
    """The stderr pipe filled once the handler is stuck in its read (before its 1 s bound
    passes): exit 4 within the bound, ``stuck_exit_after``, the grace and the margin.
    Before: still running 60 s later."""
    store = pg_database()
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": store},
            "broker": broker_for("redis"),
            "sources": {"bank": {"url": sqlite_database()}},
            "engine": {"handler_timeout": "1s", "stuck_exit_after": "2s", "sweep_every": "1h"},
            "shutdown": {"grace": "2s"},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    log = EventLog(store)
    try:
        append(log, "bank", [("account", HUNG, "Deposited", {"amount": 5, "seq": 1})])
    finally:
        log.close()
    output = FullPipe()
    command = [sys.executable, "-m", "workers.cli", "work", "--config", str(config), "-t", "1"]
    env = {HANG_ON: HUNG, HANG_HOW: "server", HANG_PORT: str(silent_server.port)}
    worker = subprocess.Popen(
        command,
        stdout=output.write_end,
        stderr=output.write_end,
        start_new_session=True,
        env={**os.environ, **env},
    )
    try:
        assert output.read_until(lambda text: "worker started" in text, 60), output.text()
        assert silent_server.accepted.wait(30), output.text()
        output.fill()  # before the handler's 1 s bound passes: the watchdog's line waits
        output.close_write_end()
        started = time.monotonic()
        try:
            code = worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - started
        output.drain()
        assert code == EXIT_STUCK, f"exit {code} (None: running 60 s later)\n{output.text()}"
        assert took < 1 + 2 + 2 + 5 + 10, took
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        output.close()
