"""``work -p N`` stops within a bound even when a child cannot take its own grace exit."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.broker_helpers import Processes, child_pids, wait_until
from tests.cli_helpers import run_cli, write_config

GRACE = 1.0  # shutdown.grace, seconds


def _alive(pid: int) -> bool:
    """Running or stopped, not gone or a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_child_that_cannot_stop_is_killed_past_the_grace_and_the_set_exits_1(
    broker_for: Callable[[str], dict[str, Any]],
    sqlite_database: Callable[[], str],
    processes: Processes,
    tmp_path: Path,
) -> None:
    """A child SIGSTOPped (a debugger, a frozen cgroup, a process stuck in the kernel)
    ignores SIGTERM and its grace timer: the parent waited for it for ever. Now it is
    killed 5 s past the grace and the parent exits 1, saying so."""
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": sqlite_database()},
            "broker": broker_for("redis"),
            "sources": {"bank": {"url": sqlite_database()}},
            "shutdown": {"grace": f"{GRACE:g}s"},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    key = processes.start("work", "work", "--config", str(config), "-p", "2", "-t", "1")
    parent = processes.running[key]
    assert wait_until(lambda: len(child_pids(parent.pid)) == 2, 30), processes.log_tail()
    assert wait_until(lambda: processes.log_tail().count("worker started") >= 2, 60), (
        processes.log_tail()
    )
    stuck, other = child_pids(parent.pid)
    os.kill(stuck, signal.SIGSTOP)
    try:
        started = time.monotonic()
        parent.send_signal(signal.SIGTERM)
        code = parent.wait(timeout=60)
        waited = time.monotonic() - started
    finally:
        if _alive(stuck):
            os.kill(stuck, signal.SIGKILL)
            os.kill(stuck, signal.SIGCONT)
    assert code == 1, processes.log_tail()
    assert waited < 60
    assert not _alive(stuck)
    assert not _alive(other)
    assert "worker process did not stop in time; killing it" in processes.log_tail()
