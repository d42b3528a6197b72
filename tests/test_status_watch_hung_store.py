"""``status --watch`` while the read store hangs (a silent server, or a proxy that stalls
on the read of the log's heads): each round reports the store as not answering within
``--timeout`` and leaves its reads going; the next rounds wait for those reads instead of
starting them again. Before, every round left another thread (and connection) per hung
read, without bound.

Each test runs a real ``readmodel status --watch --json`` process and counts its threads
in ``/proc/<pid>/task`` (and the proxy's stalled connections) between round 3 and round 18.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from config import load_settings
from tests.broker_helpers import wait_until
from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import init_outbox
from tests.stall_proxy_helpers import stall_proxy

ROUNDS = 15


def _config(path: Path, store: str, source: str) -> Path:
    """``totals`` (reading ``bank``) in ``store``; ``bank`` at ``source``."""
    config = write_config(
        path,
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": store},
            "sources": {"bank": {"url": source}},
        },
    )
    init_outbox(load_settings(config).sources["bank"], "bank")
    return config


class _Watch:
    """A ``readmodel status --watch --json`` process, its rounds read from its output."""

    def __init__(self, process: subprocess.Popen[str], output: Path) -> None:
        self.process = process
        self.output = output

    def rounds(self) -> list[dict]:
        lines = self.output.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def after(self, count: int) -> list[dict]:
        """The rounds once there are ``count`` of them (the process still running)."""
        assert wait_until(
            lambda: len(self.rounds()) >= count or self.process.poll() is not None, 120
        ), len(self.rounds())
        assert self.process.poll() is None, self.output.read_text()
        return self.rounds()

    def threads(self) -> int:
        return len(list(Path(f"/proc/{self.process.pid}/task").iterdir()))


@contextmanager
def _watching(config: Path, tmp_path: Path) -> Iterator[_Watch]:
    output = tmp_path / "watch.out"
    command = [sys.executable, "-m", "workers.cli", "status", "--watch", "--json"]
    command += ["--every", "0.2", "--timeout", "0.3", "--config", str(config)]
    with output.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.PIPE, text=True)
    watch = _Watch(process, output)
    try:
        yield watch
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _hung(round_: dict) -> bool:
    """The store is reported as not answering in this round."""
    return "no answer within" in json.dumps(round_)


def test_watch_rounds_during_a_hang_do_not_pile_up_threads(
    tmp_path: Path, sqlite_database: Callable[[], str], silent_port: int
) -> None:
    store = f"postgresql://u:p@127.0.0.1:{silent_port}/readmodel"
    config = _config(tmp_path / "rm.toml", store, sqlite_database())
    with _watching(config, tmp_path) as watch:
        first = watch.after(3)
        assert _hung(first[-1]), first[-1]
        before = watch.threads()

        rounds = watch.after(len(first) + ROUNDS)

        assert all(_hung(r) for r in rounds), rounds[-1]
        # a round's own thread (status-watch) may still be ending
        assert wait_until(lambda: watch.threads() <= before + 1, 5), (before, watch.threads())


def test_watch_rounds_during_a_stall_do_not_pile_up_connections(
    tmp_path: Path, sqlite_database: Callable[[], str], pg_database: Callable[[], str]
) -> None:
    """The store answers, but stalls on every read of the log's heads: the reads a round
    leaves going hold their connections, which the next rounds wait for."""
    store = pg_database()
    source = sqlite_database()
    migrated = run_cli(["migrate", "--config", str(_config(tmp_path / "rm.toml", store, source))])
    assert migrated.exit_code == 0, migrated.output
    with stall_proxy(store, b"rm_log_heads") as proxy:
        config = _config(tmp_path / "stalled.toml", proxy.url(store), source)
        with _watching(config, tmp_path) as watch:
            first = watch.after(3)
            assert _hung(first[-1]), first[-1]
            stalls, threads = proxy.stalled(), watch.threads()

            rounds = watch.after(len(first) + ROUNDS)

            assert all(_hung(r) for r in rounds), rounds[-1]
            assert proxy.stalled() == stalls >= 1
            assert wait_until(lambda: watch.threads() <= threads + 1, 5), (
                threads,
                watch.threads(),
            )
