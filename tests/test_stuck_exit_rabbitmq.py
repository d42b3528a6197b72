"""A worker stuck in a handler exits 4 on a RabbitMQ broker too, and nothing is lost.

The README promises that the messages such a worker had taken but not finished go back to
RabbitMQ at once (its consumer's channel closes as it stops, or with the process: what it
had not acknowledged, the stuck message and those prefetched behind it, is redelivered),
that a restarted worker applies every event once, and that an event stuck at every attempt
is parked after ``engine.max_attempts`` exits. The other tests of it run on Redis only;
these run real ``work`` processes (``-p 1`` and ``-p 2``) on a RabbitMQ queue of their own
and look into the queue between the exit and the restart."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from config import load_settings
from outbox.db import create_engine
from outbox.envelope import aggregate_hash
from outbox.log import EventLog
from projections.store_tables import failures, parked_events
from projections.stuck_events import STUCK_ERROR
from tests.broker_helpers import (
    Processes,
    peek_rabbitmq_queue,
    rabbitmq_queue_counts,
    wait_until,
)
from tests.cache_helpers import append
from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import init_outbox, insert_events
from tests.projection_fixtures import HANG_HOW, HANG_ON, HANG_PORT, read_balances, read_totals
from workers.actors import APPLY_ACTOR
from workers.stuck_exit import EXIT_MARGIN

EXIT_STUCK = 4
STUCK = "acct-1"
STUCK_LINE = "handler stuck past engine.stuck_exit_after; exiting to be restarted"
GRACE = 2.0
TOTALS_PARTITIONS = 4  # tests.projection_fixtures.Totals: the default
BALANCES_PARTITIONS = 2
# (aggregate id, payload) of the parking test: acct-1's first event (position 2) gets stuck.
EVENTS = [
    ("acct-0", {"amount": 10, "seq": 1}),
    (STUCK, {"amount": 20, "seq": 1}),
    ("acct-0", {"amount": 30, "seq": 2}),
    (STUCK, {"amount": 40, "seq": 2}),
]


class Server:
    """A listening socket the stuck handler reads from: connections are held silent (the
    handler's read blocks) until :meth:`answer`, then each gets one byte."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._answering = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def answer(self) -> None:
        self._answering.set()

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                conn = None
            if conn is not None:
                self.accepted += 1
                self._held.append(conn)
            if self._answering.is_set():
                for held in self._held:
                    try:
                        held.sendall(b"x")
                    except OSError:
                        pass  # a dead worker's connection
                    held.close()
                self._held.clear()

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        for held in self._held:
            held.close()
        self.sock.close()


@pytest.fixture
def server() -> Iterator[Server]:
    held = Server()
    yield held
    held.close()


def _deposits(accounts: list[str], seqs: tuple[int, ...]) -> list[tuple[str, str, str, dict]]:
    return [
        ("account", a, "Deposited", {"amount": 1000 + 10 * int(a[5:]) + s, "seq": s})
        for s in seqs
        for a in accounts
    ]


def _hash(account: str) -> int:
    return aggregate_hash("account", account)


def _apart_from(account: str, count: int) -> list[str]:
    """``count`` accounts in lanes of neither projection that ``account`` is in: each lane's
    only message is then the relay's, so one the dying worker lost is seen missing."""
    return [
        other
        for other in (f"acct-{i}" for i in range(2, 100))
        if _hash(other) % TOTALS_PARTITIONS != _hash(account) % TOTALS_PARTITIONS
        and _hash(other) % BALANCES_PARTITIONS != _hash(account) % BALANCES_PARTITIONS
    ][:count]


def _relay(config: Path, source: sa.Engine, events: list[tuple[str, str, str, dict]]) -> None:
    """Commit ``events`` to the outbox and relay them (the relay publishes their lanes)."""
    insert_events(source, events)
    relayed = run_cli(["relay", "--once", "--config", str(config)])
    assert relayed.exit_code == 0, relayed.output


def _lanes_done(config: Path) -> list[dict[str, Any]]:
    """Every lane of every projection, from ``status --json``: its checkpoint and head."""
    status = run_cli(["status", "--json", "--config", str(config)])
    assert status.exit_code == 0, status.output
    return [
        {"projection": p["projection"], **lane}
        for p in json.loads(status.output)["projections"]
        for lane in p["lanes"]
    ]


def _started(processes: Processes, key: str) -> int:
    """How many worker processes of ``work`` process ``key`` have started."""
    return (processes.logs / f"{key}.log").read_text(errors="replace").count("worker started")


def _drained(queue: str) -> bool:
    counts = rabbitmq_queue_counts(queue)
    return all(count == (0, 0) for count in counts.values())


def _parked(store: sa.Engine) -> list[int]:
    """Positions of the events parked now (not retried or skipped)."""
    with store.connect() as conn:
        rows = conn.execute(
            sa.select(parked_events.c.position)
            .where(parked_events.c.status == "parked")
            .order_by(parked_events.c.position)
        )
        return [row.position for row in rows]


def _held_messages_back(
    broker: dict[str, Any], config: Path, events: list[tuple[str, str, str, dict]], processes: str
) -> None:
    """After the exit: the stuck lane's message is in the queue, redelivered (with ``-p 1``,
    so is the one prefetched behind it, and no other: ``prefetch`` is 2 x 1 thread), and
    each lane still to apply has a message reaching its last event (``events`` in the
    log's order)."""
    queued = peek_rabbitmq_queue(broker["url"], broker["queue"])
    assert all(m.actor_name == APPLY_ACTOR for _, m in queued)
    stuck_lane = ("totals", "bank", _hash(STUCK) % TOTALS_PARTITIONS)
    assert any(redelivered and tuple(m.args[:3]) == stuck_lane for redelivered, m in queued)
    if processes == "1":
        assert sum(redelivered for redelivered, _ in queued) == 2, queued
    targets: dict[tuple[str, str, int], int] = {}
    for _, m in queued:
        lane = tuple(m.args[:3])
        targets[lane] = max(targets.get(lane, 0), m.args[3])
    last: dict[tuple[str, str, int], int] = {}
    for position, (_, account, _, _) in enumerate(events, start=1):
        for projection, partitions in (
            ("totals", TOTALS_PARTITIONS),
            ("balances", BALANCES_PARTITIONS),
        ):
            last[(projection, "bank", _hash(account) % partitions)] = position
    for lane in _lanes_done(config):
        key_of = (lane["projection"], lane["source"], lane["partition"])
        if lane["checkpoint"] < last.get(key_of, 0):
            assert targets.get(key_of, 0) >= last[key_of], (lane, queued)


@pytest.mark.parametrize("worker_processes", ["1", "2"])
def test_a_worker_stuck_on_rabbitmq_exits_4_its_messages_go_back_and_apply_once(
    worker_processes: str,
    broker_for: Callable[[str], dict[str, Any]],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    processes: Processes,
    server: Server,
    tmp_path: Path,
) -> None:
    """One thread per process: ``acct-1``'s Totals handler reads the test's silent server.
    Once it is stuck, other accounts' events (in lanes apart from acct-1's) are relayed,
    their messages published: one is prefetched by the stuck worker, behind the stuck one.
    The worker exits 4 within the bound (1 s + ``stuck_exit_after`` 3 s + the stop); its
    unacknowledged messages are back in the queue, redelivered, every lane still to apply
    has one (a worker that acknowledged its prefetched messages as it stopped failed here).
    Restarted with the server answering, every event is applied once, every checkpoint at
    the head, and every message handled (the queue drained: none left to apply twice)."""
    store_url = pg_database()
    broker = broker_for("rabbitmq")
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": [
                "tests.projection_fixtures:Totals",
                "tests.projection_fixtures:Balances",
            ],
            "store": {"url": store_url},
            "broker": broker,
            "sources": {"bank": {"url": sqlite_database()}},
            "engine": {
                "handler_timeout": "1s",
                "stuck_exit_after": "3s",
                "sweep_every": "1h",
                "batch_size": 5,
            },
            "shutdown": {"grace": f"{GRACE:g}s"},
        },
    )
    settings = load_settings(config)
    init_outbox(settings.sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    first = _deposits([STUCK], (1, 2))
    later = _deposits(_apart_from(STUCK, 4), (1, 2))
    store = create_engine(store_url)
    source = create_engine(settings.sources["bank"].url)
    env = {HANG_ON: STUCK, HANG_HOW: "server", HANG_PORT: str(server.port)}
    command = ("work", "--config", str(config), "-p", worker_processes, "-t", "1", "--log-json")
    try:
        key = processes.start("work", *command, env=env)
        process = processes.running[key]
        assert wait_until(lambda: _started(processes, key) == int(worker_processes), 60), (
            processes.log_tail()
        )
        # The log empty, the first sweep sent nothing: every message is the relay's, for
        # the lanes its events touch, so each lane with work has exactly one.
        _relay(config, source, first)
        assert wait_until(lambda: server.accepted >= 1, 60), processes.log_tail()
        stuck_at = time.monotonic()
        # Relayed while the only thread of one worker is stuck: one is prefetched behind it.
        _relay(config, source, later)
        log_text = processes.logs / f"{key}.log"
        assert wait_until(lambda: STUCK_LINE in log_text.read_text(errors="replace"), 30), (
            processes.log_tail()
        )
        given_up = time.monotonic()
        assert wait_until(lambda: process.poll() is not None, 30), processes.log_tail()
        stopped = time.monotonic()
        assert process.returncode == EXIT_STUCK, processes.log_tail()
        # 1 s bound + 3 s stuck + the stop (up to 2 s grace + 5 s margin) and -p 2's 0.5 s poll
        assert stopped - stuck_at < 1 + 3 + GRACE + EXIT_MARGIN + 1, processes.log_tail()
        if worker_processes == "1":
            # It stopped by itself (RabbitMQ's consumer did not hold the stop up), not cut
            # short by the exit at grace + margin. (-p 2: the other process is then given the
            # stuck message at once, gets stuck on it too and abandons it at its grace.)
            assert stopped - given_up < GRACE + EXIT_MARGIN - 1, processes.log_tail()
        processes.running.pop(key)

        # What the dead worker held is back in the queue: nothing lost on the broker.
        _held_messages_back(broker, config, first + later, worker_processes)

        server.answer()
        again = processes.start("work", *command, env=env)
        # every process up (a SIGTERM to one still starting kills it: 'work -p 2' exits 1)
        assert wait_until(lambda: _started(processes, again) == int(worker_processes), 60), (
            processes.log_tail()
        )
        expected: dict[str, tuple[int, int, int]] = {}
        for _, account, _, payload in first + later:
            count, total, _ = expected.get(account, (0, 0, 0))
            expected[account] = (count + 1, total + payload["amount"], 0)
        balances = {account: total for account, (_, total, _) in expected.items()}

        def applied() -> bool:
            return read_totals(store) == expected and read_balances(store) == balances

        assert wait_until(applied, 60, interval=0.5), (read_totals(store), processes.log_tail())
        # Every message (redelivered, re-sent by the sweep) handled: none left to apply twice.
        assert wait_until(lambda: _drained(broker["queue"]), 60, interval=1), rabbitmq_queue_counts(
            broker["queue"]
        )
        assert read_totals(store) == expected
        assert read_balances(store) == balances
        lanes = _lanes_done(config)
        assert {lane["projection"] for lane in lanes} == {"totals", "balances"}
        assert all(lane["checkpoint"] == lane["head"] for lane in lanes), lanes
        assert _parked(store) == []
        assert processes.stop_all()[again] == 0, processes.log_tail()
    finally:
        store.dispose()
        source.dispose()


def _failures(store: sa.Engine) -> list[tuple[int, int, str]]:
    with store.connect() as conn:
        rows = conn.execute(
            sa.select(failures.c.position, failures.c.attempts, failures.c.last_error)
        )
        return [(r.position, r.attempts, r.last_error) for r in rows]


@pytest.mark.parametrize("worker_processes", ["1", "2"])
def test_an_event_stuck_at_every_attempt_on_rabbitmq_is_parked_then_retried(
    worker_processes: str,
    broker_for: Callable[[str], dict[str, Any]],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    processes: Processes,
    tmp_path: Path,
) -> None:
    """``acct-1``'s handler reads a socket no one writes to, at every attempt (its message
    redelivered by RabbitMQ to the next worker). Two starts exit 4, each counting one stuck
    attempt; the third parks the event and acct-1's later one (``max_attempts = 2``), applies
    the rest and keeps running; ``parked retry`` applies both once the handler is fixed."""
    store_url = pg_database()
    broker = broker_for("rabbitmq")
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": store_url},
            "broker": broker,
            "sources": {"bank": {"url": sqlite_database()}},
            "engine": {
                "handler_timeout": "1s",
                "stuck_exit_after": "2s",
                "max_attempts": 2,
                "sweep_every": "1h",
            },
            "shutdown": {"grace": "2s"},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    log, store = EventLog(store_url), create_engine(store_url)
    # acct-1's first event (position 2) gets stuck; its second (4) waits behind it.
    append(log, "bank", [("account", a, "Deposited", p) for a, p in EVENTS])
    env = {HANG_ON: STUCK, HANG_HOW: "socket"}
    command = ("work", "--config", str(config), "-p", worker_processes, "-t", "2", "--log-json")
    try:
        for attempt in (1, 2):
            key = processes.start("work", *command, env=env)
            process = processes.running[key]
            assert wait_until(lambda: process.poll() is not None, 60), processes.log_tail()  # noqa: B023
            assert process.returncode == EXIT_STUCK, processes.log_tail()
            processes.running.pop(key)
            failed = _failures(store)
            assert [(position, attempts) for position, attempts, _ in failed] == [(2, attempt)]
            assert all(error.startswith(STUCK_ERROR) for _, _, error in failed), failed

        last = processes.start("work", *command, env=env)
        assert wait_until(lambda: _started(processes, last) == int(worker_processes), 60), (
            processes.log_tail()
        )
        assert wait_until(lambda: _parked(store) == [2, 4], 30), processes.log_tail()
        assert wait_until(lambda: read_totals(store) == {"acct-0": (2, 40, 0)}, 30), (
            read_totals(store),
            processes.log_tail(),
        )
        # The lane flows: its messages all handled, the stuck event never run again.
        assert wait_until(lambda: _drained(broker["queue"]), 60, interval=1), rabbitmq_queue_counts(
            broker["queue"]
        )
        assert processes.running[last].poll() is None, processes.log_tail()
        listed = run_cli(["parked", "list", "--json", "--config", str(config)])
        assert listed.exit_code == 0, listed.output
        [entry] = [e for e in json.loads(listed.output) if e["position"] == 2]
        assert "stuck 2 times" in entry["reason"], entry
        assert entry["attempts"] == 2, entry
        assert processes.stop_all()[last] == 0, processes.log_tail()

        retried = run_cli(
            ["parked", "retry", "--projection", "totals", "--yes", "--config", str(config)]
        )
        assert retried.exit_code == 0, retried.output
        assert read_totals(store) == {"acct-0": (2, 40, 0), STUCK: (2, 60, 0)}
        assert _parked(store) == []
    finally:
        log.close()
        store.dispose()
