"""SIGTERM to a worker still starting is a clean stop (exit 0), as it is once it runs.

A worker process installed its signal handlers only once its stores were open: SIGTERM
while it connected to them (one slow to answer) or was still importing killed it, and
``work -p N`` counted a child killed by a signal as a failure (exit 1). Now a process
signalled while it starts exits at once, code 0, having taken no work; and ``work -p N``
takes a child that SIGTERM killed before it could install its handlers as stopped.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from outbox.db import create_engine
from tests.broker_helpers import Processes, child_pids, wait_until
from tests.cli_helpers import run_cli, write_config
from tests.stall_proxy_helpers import stall_proxy

MARKER = b"balances"  # first sent when the runtime looks for the projection's table
HOLD_IMPORTS = """\
import os
import pathlib
import time

if "_READMODEL_WORKER_PARENT_PID" in os.environ:  # a worker process of work -p N
    pathlib.Path(__file__).with_name(f"held-{os.getpid()}").touch()
    time.sleep(600)
"""


def _config(path: Path, store: str, source: str, broker: dict[str, Any] | None) -> Path:
    data: dict[str, Any] = {
        "projections": ["tests.projection_fixtures:Balances"],
        "store": {"url": store},
        "sources": {"bank": {"url": source}},
        "shutdown": {"grace": "30s"},  # a stop past the grace would exit 1
    }
    if broker is not None:
        data["broker"] = broker
    return write_config(path, data)


def _has_balances(url: str) -> bool:
    engine = create_engine(url)
    try:
        return sa.inspect(engine).has_table("balances")
    finally:
        engine.dispose()


def _exit_code(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


@pytest.mark.parametrize(
    ("args", "starting"),
    [(["work", "-p", "2"], 2), (["work"], 1), (["run"], 1)],
    ids=["work -p 2", "work", "run"],
)
def test_sigterm_while_the_worker_connects_to_its_stores_is_a_clean_stop(
    args: list[str],
    starting: int,
    tmp_path: Path,
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
    processes: Processes,
) -> None:
    """Each worker process held by its store at start-up (a proxy that stops answering the
    query for the projection's table, a second process waiting behind it); SIGTERM to the
    command: exit 0 at once, nothing created. Before: ``work -p 2`` exited 1, ``work`` and
    ``run`` died of the signal."""
    store, source = pg_database(), sqlite_database()
    broker = broker_for("redis") if args[0] == "work" else None
    direct = _config(tmp_path / "direct.toml", store, source, broker)
    assert run_cli(["migrate", "--config", str(direct)]).exit_code == 0
    with stall_proxy(store, MARKER) as proxy:
        proxied = _config(tmp_path / "proxied.toml", proxy.url(store), source, broker)
        key = processes.start("worker", *args, "--config", str(proxied), "-t", "1")
        command = processes.running[key]
        # One held by the proxy, the other (work -p 2) waiting for it at the database.
        held = wait_until(lambda: proxy.stalled() == 1 and proxy.live() == starting, 60)
        assert held, processes.log_tail()

        command.send_signal(signal.SIGTERM)
        code = _exit_code(command, 20)

    assert code == 0, f"exit {code} (None: running 20 s after)\n{processes.log_tail()}"
    log = processes.log_tail()
    assert log.count("stopped while starting: no work taken yet") == starting, log
    assert "Traceback" not in log and "worker started" not in log
    assert not _has_balances(store)


def test_sigterm_while_the_worker_processes_still_import_stops_the_set_with_0(
    tmp_path: Path,
    sqlite_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
    processes: Processes,
) -> None:
    """``work -p 2``'s processes held before any line of readmodel runs (a sitecustomize
    that waits): SIGTERM kills them, before they could install a handler, and that is
    their stop. Before: exit 1."""
    store = sqlite_database()
    config = _config(tmp_path / "readmodel.toml", store, sqlite_database(), broker_for("redis"))
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "sitecustomize.py").write_text(HOLD_IMPORTS)
    path = f"{hold}:{Path(__file__).parent.parent}"
    key = processes.start(
        "worker", "work", "-p", "2", "-t", "1", "--config", str(config), env={"PYTHONPATH": path}
    )
    command = processes.running[key]
    assert wait_until(lambda: len(list(hold.glob("held-*"))) == 2, 60), processes.log_tail()
    assert sorted(child_pids(command.pid)) == sorted(
        int(held.name.removeprefix("held-")) for held in hold.glob("held-*")
    )

    command.send_signal(signal.SIGTERM)
    code = _exit_code(command, 20)

    assert code == 0, f"exit {code} (None: running 20 s after)\n{processes.log_tail()}"
    assert "Traceback" not in processes.log_tail()


@pytest.mark.parametrize("command", ["work", "run", "sweeper"])
def test_a_worker_that_fails_starting_in_process_gives_the_signals_back(
    command: str,
    tmp_path: Path,
    sqlite_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
) -> None:
    """Run in-process (as here), a worker that fails as it starts (a store not migrated:
    exit 2) must not leave its start-up handler behind: the host's Ctrl-C would exit 0."""
    broker = broker_for("redis") if command == "work" else None
    config = _config(tmp_path / "readmodel.toml", sqlite_database(), sqlite_database(), broker)
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)

    result = run_cli([command, "--config", str(config)])

    assert result.exit_code == 2, result.output
    assert {signum: signal.getsignal(signum) for signum in before} == before
    assert signal.set_wakeup_fd(wakeup) == wakeup
