"""``work`` on a broker that accepts connections and never answers (a hung proxy, a stopped
process) keeps retrying, and says so in one line per attempt naming the broker by where it
is: ``broker unreachable: amqp://127.0.0.1:port/: timeout during AMQP handshake; retrying
in 0.5s``, never a traceback nor the password.

Before: on RabbitMQ each consumer thread logged Dramatiq's "Consumer encountered an
unexpected error." with pika's full traceback, on Redis "Consumer encountered a connection
error: Timeout reading from socket" (critical, twice per attempt, no broker named).

The bounds are shortened through the URL (pika's ``stack_timeout``, redis-py's socket
timeouts) and Dramatiq's restart delay (``dramatiq_restart_delay``) to keep the test short."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.broker_helpers import Processes, wait_until
from tests.cli_helpers import run_cli, write_config

SECRET = "S3cret-Broker-0417"
URLS = {
    "amqp": "amqp://guest:{secret}@127.0.0.1:{port}/?stack_timeout=1",
    "redis": "redis://:{secret}@127.0.0.1:{port}/0?socket_timeout=1&socket_connect_timeout=1",
}
WHERE = {"amqp": "amqp://127.0.0.1:{port}/", "redis": "redis://127.0.0.1:{port}/0"}


def _closed_port() -> int:
    """A port nothing listens on: connections are refused (a broker that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _events(log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("broker", ["silent", "down"])
@pytest.mark.parametrize("scheme", ["amqp", "redis"])
def test_an_unreachable_broker_is_one_line_per_attempt_naming_it(
    scheme: str,
    broker: str,
    tmp_path: Path,
    silent_port: int,
    sqlite_database: Callable[[], str],
    processes: Processes,
) -> None:
    port = silent_port if broker == "silent" else _closed_port()
    url = URLS[scheme].format(secret=SECRET, port=port)
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": sqlite_database()},
            "sources": {"bank": {"url": sqlite_database()}},
            "broker": {"url": url, "queue": "rm_test_silent"},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    key = processes.start(
        "work", "work", "-t", "1", "--log-json", "--config", str(config),
        env={"dramatiq_restart_delay": "500"},
    )  # fmt: skip
    log_path = processes.logs / f"{key}.log"

    def lines() -> list[dict[str, Any]]:
        events = _events(log_path.read_text(errors="replace"))
        return [e for e in events if str(e.get("event", "")).startswith("broker unreachable")]

    assert wait_until(lambda: len(lines()) >= 3, 15), log_path.read_text(errors="replace")
    assert processes.running[key].poll() is None, log_path.read_text(errors="replace")
    processes.running[key].send_signal(signal.SIGTERM)
    try:
        code = processes.running[key].wait(timeout=15)
    except subprocess.TimeoutExpired:
        code = None

    log = log_path.read_text(errors="replace")
    assert code == 0, f"exit {code} (None: still running)\n{log}"
    assert "Traceback" not in log and SECRET not in log, log
    assert "Consumer encountered" not in log, log
    where = WHERE[scheme].format(port=port)
    said = lines()
    for event in said:
        assert event["event"].startswith(f"broker unreachable: {where}: "), event
        assert event["event"].endswith(("; retrying in 0.5s", "; waiting for it")), event
    attempts = [e for e in said if e["event"].endswith("retrying in 0.5s")]
    assert len(attempts) >= 2, said  # and at most one start-up line
    if scheme == "amqp" and broker == "silent":
        assert any("timeout during AMQP handshake" in e["event"] for e in said), said
    times = [datetime.fromisoformat(e["timestamp"]) for e in attempts]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    assert all(gap > 0.3 for gap in gaps), (gaps, said)  # one line per attempt, not per thread


@pytest.mark.parametrize("scheme", ["amqp", "redis"])
def test_work_starting_on_a_silent_broker_says_so_within_its_check_and_starts(
    scheme: str,
    tmp_path: Path,
    silent_port: int,
    sqlite_database: Callable[[], str],
    processes: Processes,
) -> None:
    """The start-up check (5 s) names the silent broker and ``work`` starts, waiting for it
    (README: a broker not reachable yet is waited for). Before, on RabbitMQ the check sat
    15 s (pika's handshake bound, not the check's) and said nothing, then the first
    consumer's failure came 15 s later: 30 s without a word."""
    url = f"{URLS[scheme].split('?')[0]}".format(secret=SECRET, port=silent_port)
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": sqlite_database()},
            "sources": {"bank": {"url": sqlite_database()}},
            "broker": {"url": url, "queue": "rm_test_silent"},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    key = processes.start("work", "work", "-t", "1", "--log-json", "--config", str(config))
    log_path = processes.logs / f"{key}.log"
    where = WHERE[scheme].format(port=silent_port)
    waiting = f"broker unreachable: {where}: "

    def said() -> bool:
        log = log_path.read_text(errors="replace")
        return waiting in log and "; waiting for it" in log and "worker started" in log

    assert wait_until(said, 10), log_path.read_text(errors="replace")
    processes.running[key].send_signal(signal.SIGTERM)
    log = log_path.read_text(errors="replace")
    assert "Traceback" not in log and SECRET not in log, log
