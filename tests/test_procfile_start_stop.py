"""SIGTERM to any process of the Procfile while it still starts is a clean stop (exit 0).

``relay`` installed its signal handlers only once its stores and sources were open, and
``metrics`` took a signal during its start-up checks (its store's schema revision, waited
for up to ``--timeout``) as a stop to finish later: a relay held at start-up by a store
slow to answer died of the signal (-15), a metrics server ran on to ``shutdown.grace`` and
exited 1. Now each process of the Procfile (``work`` and ``sweeper`` already did) exits at
once, code 0, logging ``stopped while starting: no work taken yet``.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from config import SourceSettings
from tests.broker_helpers import Processes, wait_until
from tests.cli_helpers import run_cli, write_config
from tests.metrics_helpers import free_port
from tests.outbox_helpers import init_outbox, outbox_db
from tests.stall_proxy_helpers import stall_proxy

PROCFILE = Path(__file__).resolve().parents[1] / "Procfile"
MARKER = b"rm_alembic_version"  # each process's first question to its store: its revision
STARTED = ("leading source", "worker started", "serving metrics", "stopping: finishing")
EXTRA_ARGS = {"metrics": ["--timeout", "120"]}  # its schema check waited for 120 s, not 5


def _procfile() -> dict[str, list[str]]:
    """The Procfile's processes: name -> readmodel's arguments, the config left to fill."""
    processes = {}
    for line in PROCFILE.read_text().splitlines():
        name, _, command = line.partition(":")
        words = shlex.split(command)
        if not name.strip() or words[:2] != ["exec", "readmodel"]:
            continue
        processes[name.strip()] = words[2:]
    return processes


def _args(words: list[str], config: Path) -> list[str]:
    return [str(config) if word.startswith("${READMODEL_CONFIG") else word for word in words]


def _config(path: Path, store: str, source: str, broker: dict[str, Any]) -> Path:
    return write_config(
        path,
        {
            "projections": ["tests.projection_fixtures:Balances"],
            "store": {"url": store},
            "sources": {"bank": {"url": source}},
            "broker": broker,
            "metrics": {"host": "127.0.0.1", "port": free_port()},
            "shutdown": {"grace": "30s"},  # a stop past the grace would exit 1
        },
    )


def _exit_code(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def test_the_procfile_runs_relay_worker_sweeper_and_metrics() -> None:
    """The processes the test below stops: a new one must be added to it (and to README's
    Stopping section) knowingly."""
    assert sorted(_procfile()) == ["metrics", "relay", "sweeper", "worker"]


@pytest.mark.parametrize("name", sorted(_procfile()))
def test_sigterm_while_a_procfile_process_checks_its_store_is_a_clean_stop(
    name: str,
    tmp_path: Path,
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
    processes: Processes,
) -> None:
    """The Procfile's command, its store behind a proxy that stops answering the schema
    revision's query; SIGTERM: exit 0 at once, the row in the outbox not relayed. Before:
    relay -15, metrics still running 20 s after (exit 1 at the grace)."""
    store, source = pg_database(), sqlite_database()
    init_outbox(SourceSettings(url=source), "bank")
    outbox = outbox_db(source)
    try:
        outbox.insert([("account", "a1", "Deposited", {"amount": 5})])
        broker = broker_for("redis")
        direct = _config(tmp_path / "direct.toml", store, source, broker)
        assert run_cli(["migrate", "--config", str(direct)]).exit_code == 0
        with stall_proxy(store, MARKER) as proxy:
            proxied = _config(tmp_path / "proxied.toml", proxy.url(store), source, broker)
            args = [*_args(_procfile()[name], proxied), *EXTRA_ARGS.get(name, [])]
            key = processes.start(name, *args)
            command = processes.running[key]
            assert wait_until(lambda: proxy.stalled() == 1, 60), processes.log_tail()

            command.send_signal(signal.SIGTERM)
            code = _exit_code(command, 20)

        log = processes.log_tail()
        assert code == 0, f"exit {code} (None: running 20 s after)\n{log}"
        assert log.count("stopped while starting: no work taken yet") == 1, log
        assert "Traceback" not in log
        assert not [line for line in STARTED if line in log], log
        assert outbox.count(pending_only=True) == 1
    finally:
        outbox.close()


@pytest.mark.parametrize("command", ["relay", "metrics"])
def test_a_relay_or_metrics_that_fails_starting_in_process_gives_the_signals_back(
    command: str,
    tmp_path: Path,
    sqlite_database: Callable[[], str],
) -> None:
    """Run in-process (as here), a start that fails (a store not migrated: exit 2) must not
    leave its start-up handler behind: the host's Ctrl-C would exit 0. Before: metrics
    left its handlers (and the wakeup fd) in place."""
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Balances"],
            "store": {"url": sqlite_database()},
            "sources": {"bank": {"url": sqlite_database()}},
            "metrics": {"host": "127.0.0.1", "port": free_port()},
        },
    )
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)

    result = run_cli([command, "--config", str(config)])

    assert result.exit_code == 2, result.output
    assert {signum: signal.getsignal(signum) for signum in before} == before
    assert signal.set_wakeup_fd(wakeup) == wakeup
