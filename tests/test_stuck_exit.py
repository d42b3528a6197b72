"""A worker whose handler is stuck where it cannot be interrupted exits, to be restarted.

A handler blocked in C outside its store (a socket read without a timeout) survives
``engine.handler_timeout``: its Dramatiq thread, and the lane's messages it holds, stayed
stuck for ever, only logged and counted as overdue. Past ``engine.stuck_exit_after`` the
worker process logs the projection and event (never its payload) and exits with code 4,
so its supervisor restarts it; the new worker applies every event exactly once.

Real worker subprocesses on a Redis broker; the handler reads from a server socket the test
holds open and answers only once the worker has exited."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from config import ConfigError, load_settings
from outbox.db import create_engine
from outbox.envelope import Envelope
from outbox.log import EventLog
from projections.handler_timeout import HandlerTimeout, StuckHandler, bounded, handler_limit
from projections.store_tables import checkpoints, parked_events
from tests.broker_helpers import Processes, wait_until
from tests.cache_helpers import append
from tests.cli_helpers import run_cli, write_config
from tests.projection_fixtures import (
    HANG_HOW,
    HANG_ON,
    HANG_PORT,
    read_balances,
    read_totals,
)
from workers.stuck_exit import EXIT_MARGIN

HUNG = "acct-1"
EXIT_STUCK = 4
STUCK_LINE = "handler stuck past engine.stuck_exit_after; exiting to be restarted"


class Server:
    """A listening socket the handler reads from: silent (its reads block) until
    :meth:`answer`, then each connection gets one byte."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._answer, daemon=True)

    def answer(self) -> None:
        self._thread.start()

    def _answer(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                try:
                    conn.sendall(b"x")
                except OSError:
                    pass  # the dead worker's connection

    def close(self) -> None:
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.sock.close()


@pytest.fixture
def server() -> Iterator[Server]:
    held = Server()
    yield held
    held.close()


def _parked(store: sa.Engine) -> int:
    with store.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(parked_events)).scalar_one())


def _log_lines(processes: Processes, key: str) -> list[dict[str, Any]]:
    lines = []
    for line in (processes.logs / f"{key}.log").read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


@pytest.mark.parametrize("worker_processes", ["1", "2"])
def test_a_worker_stuck_in_a_handler_exits_and_its_restart_applies_every_event_once(
    worker_processes: str,
    broker_for: Callable[[str], dict[str, Any]],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    processes: Processes,
    server: Server,
    tmp_path: Path,
) -> None:
    """``acct-1``'s handler reads the test's silent server: past ``handler_timeout`` (1 s) it
    cannot be interrupted; ``stuck_exit_after`` (2 s) later the worker (with ``-p 2``, the
    parent of the stuck one too) exits 4, its log naming the projection and event, no
    payload value. Restarted with the server answering, every event is applied once."""
    store_url = pg_database()
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": [
                "tests.projection_fixtures:Totals",
                "tests.projection_fixtures:Balances",
            ],
            "store": {"url": store_url},
            "broker": broker_for("redis"),
            "sources": {"bank": {"url": sqlite_database()}},
            "engine": {
                "handler_timeout": "1s",
                "stuck_exit_after": "2s",
                "sweep_every": "1h",
                "batch_size": 5,
            },
            "shutdown": {"grace": "2s"},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    events = [
        ("account", f"acct-{a}", "Deposited", {"amount": 7000 + a * 10 + seq, "seq": seq})
        for seq in (1, 2)
        for a in range(4)
    ]
    log, store = EventLog(store_url), create_engine(store_url)
    append(log, "bank", events)  # the worker's first sweep sends every lane's message
    env = {HANG_ON: HUNG, HANG_HOW: "server", HANG_PORT: str(server.port)}
    command = ("work", "--config", str(config), "-p", worker_processes, "-t", "2", "--log-json")
    try:
        key = processes.start("work", *command, env=env)
        assert wait_until(lambda: processes.worker_started(key), 60), processes.log_tail()
        started = time.monotonic()
        process = processes.running[key]
        # 1 s bound + 2 s stuck + up to 2 s grace to stop the other threads, with slack
        assert wait_until(lambda: process.poll() is not None, 30), processes.log_tail()
        assert time.monotonic() - started < 30
        assert process.returncode == EXIT_STUCK, processes.log_tail()
        processes.running.pop(key)

        stuck = [line for line in _log_lines(processes, key) if line.get("event") == STUCK_LINE]
        assert len(stuck) == 1, processes.log_tail()
        assert stuck[0]["projection"] == "totals"
        assert stuck[0]["source"] == "bank"
        assert stuck[0]["event_type"] == "Deposited"
        assert stuck[0]["position"] in {e + 1 for e, ev in enumerate(events) if ev[1] == HUNG}
        assert stuck[0]["seconds"] >= 3
        assert stuck[0]["exit_code"] == EXIT_STUCK
        assert not any(str(p["amount"]) in json.dumps(stuck[0]) for *_, p in events)

        server.answer()
        again = processes.start("work", *command, env=env)
        assert wait_until(lambda: processes.worker_started(again), 60), processes.log_tail()
        expected: dict[str, tuple[int, int, int]] = {}
        for _, account, _, payload in events:
            count, total, _ = expected.get(account, (0, 0, 0))
            expected[account] = (count + 1, total + payload["amount"], 0)

        def applied() -> bool:
            return read_totals(store) == expected and read_balances(store) == {
                account: total for account, (_, total, _) in expected.items()
            }

        assert wait_until(applied, 60, interval=0.5), (read_totals(store), processes.log_tail())
        time.sleep(1)  # a message given back late would apply nothing more
        assert read_totals(store) == expected
        assert _parked(store) == 0
    finally:
        log.close()
        store.dispose()
    assert processes.stop_all()[again] == 0, processes.log_tail()


GRACE = 2.0


def _lock_checkpoints(store: sa.Engine, held: threading.Event, done: threading.Event) -> None:
    """What a migration's ``ALTER TABLE`` does: wait for an exclusive lock on the
    checkpoints behind the stuck batch (whose lane row it holds), every later reader of the
    table queued behind; ``held`` once granted (the stuck batch gone), kept until ``done``."""
    with store.connect() as conn:
        conn.exec_driver_sql(f"LOCK TABLE {checkpoints.name} IN ACCESS EXCLUSIVE MODE")
        held.set()
        done.wait(60)
        conn.rollback()


def _waiting_on_locks(store: sa.Engine) -> int:
    with store.connect() as conn:
        return int(
            conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            ).scalar_one()
        )


def test_a_stop_that_hangs_after_a_stuck_handler_ends_at_grace_and_the_margin(
    broker_for: Callable[[str], dict[str, Any]],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    processes: Processes,
    server: Server,
    tmp_path: Path,
) -> None:
    """The stop itself hangs: the worker's sweep (on the main thread, which runs the stop)
    waits for the checkpoints table, queued behind an exclusive lock that waits for the
    stuck batch. The process exits 4 ``shutdown.grace`` + ``EXIT_MARGIN`` after the stuck
    handler is given up on (not sooner: the stop never ended), its sweep still waiting;
    restarted, it applies every event once."""
    store_url = pg_database()
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": store_url},
            "broker": broker_for("redis"),
            "sources": {"bank": {"url": sqlite_database()}},
            "engine": {"handler_timeout": "1s", "stuck_exit_after": "3s", "sweep_every": "200ms"},
            "shutdown": {"grace": f"{GRACE:g}s"},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    events = [
        ("account", f"acct-{a}", "Deposited", {"amount": 100 * a + seq, "seq": seq})
        for seq in (1, 2)
        for a in range(4)
    ]
    log, store = EventLog(store_url), create_engine(store_url)
    append(log, "bank", events)
    env = {HANG_ON: HUNG, HANG_HOW: "server", HANG_PORT: str(server.port)}
    command = ("work", "--config", str(config), "-p", "1", "-t", "2", "--log-json")
    held, done = threading.Event(), threading.Event()
    locker = threading.Thread(target=_lock_checkpoints, args=(store, held, done), daemon=True)
    try:
        key = processes.start("work", *command, env=env)
        assert wait_until(lambda: processes.worker_started(key), 60), processes.log_tail()
        log_text = processes.logs / f"{key}.log"
        assert wait_until(lambda: "interrupting it" in log_text.read_text(), 30)
        locker.start()
        # The lock request and the worker's sweep behind it, before the stuck exit begins.
        assert wait_until(lambda: _waiting_on_locks(store) >= 2, 10), processes.log_tail()
        assert STUCK_LINE not in log_text.read_text()

        process = processes.running[key]
        assert wait_until(lambda: STUCK_LINE in log_text.read_text(), 30), processes.log_tail()
        given_up = time.monotonic()
        assert wait_until(lambda: process.poll() is not None, 30), processes.log_tail()
        waited = time.monotonic() - given_up
        assert process.returncode == EXIT_STUCK, processes.log_tail()
        processes.running.pop(key)
        assert GRACE + EXIT_MARGIN - 1 <= waited <= GRACE + EXIT_MARGIN + 5, waited
        assert "worker stopped" not in log_text.read_text()
        assert log_text.read_text().rstrip().splitlines()[-1].startswith("error: totals:")
        # The stuck batch went with the process: the lock waiting for it is granted.
        assert held.wait(30)
        done.set()
        locker.join(10)

        server.answer()
        again = processes.start("work", *command, env=env)
        assert wait_until(lambda: processes.worker_started(again), 60), processes.log_tail()
        expected: dict[str, tuple[int, int, int]] = {}
        for _, account, _, payload in events:
            count, total, _ = expected.get(account, (0, 0, 0))
            expected[account] = (count + 1, total + payload["amount"], 0)
        assert wait_until(lambda: read_totals(store) == expected, 60, interval=0.5), (
            read_totals(store),
            processes.log_tail(),
        )
        time.sleep(1)  # a message given back late would apply nothing more
        assert read_totals(store) == expected
        assert _parked(store) == 0
        assert processes.stop_all()[again] == 0, processes.log_tail()
    finally:
        done.set()
        log.close()
        store.dispose()


def test_stuck_exit_after_is_two_minutes_unless_set_or_off() -> None:
    assert load_settings(None).engine.stuck_exit_after == timedelta(minutes=2)
    engine = load_settings(None, engine={"stuck_exit_after": "10m"}).engine
    assert engine.stuck_exit_after == timedelta(minutes=10)
    assert load_settings(None, engine={"stuck_exit_after": "off"}).engine.stuck_exit_after is None
    with pytest.raises(ConfigError, match="stuck_exit_after"):
        load_settings(None, engine={"stuck_exit_after": "500ms"})


def _read_blocked(
    on_stuck: Callable[[StuckHandler], None] | None, stuck_after: float | None
) -> tuple[list[BaseException], Callable[[], None]]:
    """A thread whose handler (bound 0.2 s) reads a socket nobody writes to; returns what it
    raised (once released) and the release."""
    reader, writer = socket.socketpair()
    event = Envelope(
        event_id="e-1",
        source="bank",
        aggregate_type="account",
        aggregate_id=HUNG,
        event_type="Deposited",
        payload={"amount": 7011, "seq": 1},
        position=2,
    )
    raised: list[BaseException] = []

    def handle() -> None:
        with handler_limit(0.2, None, stuck_after, on_stuck):
            try:
                with bounded("totals", event):
                    reader.recv(1)
            except HandlerTimeout as exc:
                raised.append(exc)

    thread = threading.Thread(target=handle, daemon=True)
    thread.start()

    def release() -> None:
        writer.sendall(b"x")
        thread.join(10)
        reader.close()
        writer.close()

    return raised, release


def test_the_stuck_action_is_told_the_event_once_and_only_when_set() -> None:
    """Engine level, no process exit: ``on_stuck`` is called once, ``stuck_after`` past the
    bound, with the event's place and type; without a ``stuck_after`` it never is. Either
    way the handler, once its read returns, fails with :class:`HandlerTimeout`."""
    told: list[StuckHandler] = []
    raised, release = _read_blocked(told.append, 1.5)
    try:
        assert wait_until(lambda: bool(told), 10)
        time.sleep(0.5)
        assert told == [StuckHandler("totals", "bank", 2, "Deposited", told[0].seconds)]
        assert told[0].seconds >= 1.7
    finally:
        release()
    assert len(raised) == 1

    never: list[StuckHandler] = []
    raised, release = _read_blocked(never.append, None)
    try:
        time.sleep(2.5)  # past the bound and its escalation
        assert never == []
    finally:
        release()
    assert len(raised) == 1
