"""Fault injection for the whole pipeline: an aggregating projection stays exact under chaos.

A writer thread commits 50,000 ``Deposited`` events (payload ``{"amount", "seq"}``,
``seq`` counting each account's events from 1) over 300 accounts into a PostgreSQL
outbox, in bursts released just before each kill, so every kill hits a busy pipeline.
One ``readmodel relay`` and three ``readmodel work -p 1 -t 4`` processes run the
``Totals`` projection (running totals per account, counting out-of-order events as
violations) in apply transactions of 500 events, with the ``DeliverTwice`` middleware:
every message any worker takes is processed twice. Meanwhile:

* a random running worker is SIGKILLed at a random moment (fixed seed) and a
  replacement started, at least ten times, while another worker stays up; a Redis
  worker's unacknowledged messages only come back after the broker's heartbeat
  timeout, so progress has to come from the sweeper (every second here) and from
  lanes pulling their events from the log;
* Redis: mid-run the server is flushed (``FLUSHALL``) and restarted (``shutdown
  nosave``, started again with the machine's own command), so every queued
  message is lost and every process sees the broker go away and come back;
* RabbitMQ: mid-run the work queue is purged (``rabbitmqctl purge_queue``), losing
  whatever was queued; the server itself is never stopped.

Afterwards, with every process stopped, the read model must equal the totals
computed from the rows the writer inserted (and from the event log): per account
the exact total, the exact number of events, the last ``seq``, no violation;
the log holds every event once; nothing is parked or left in the outbox; and no
process died on its own: each one survived the chaos and exits 0 on SIGTERM.
"""

from __future__ import annotations

import functools
import random
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import sqlalchemy as sa

from config import load_settings
from outbox.db import create_engine
from outbox.schema import event_log, log_heads, parked
from projections.store_tables import blocked, checkpoints, failures, parked_events
from tests.broker_helpers import REDIS_URL, Processes
from tests.cli_helpers import write_config
from tests.outbox_helpers import init_outbox, insert_events, migrate_store
from tests.projection_fixtures import Totals, account_totals

pytestmark = pytest.mark.chaos

SEED = 4242
EVENTS = 50_000
ACCOUNTS = 300
WRITE_CHUNK = 500  # events per writer transaction
APPLY_BATCH = 500  # events per apply transaction: short transactions, so kills land in and
# between them while the pipeline still moves
WORKERS = 3  # worker processes running at any time (at least two of them up at each kill)
MIN_KILLS = 10
KILL_DELAY = (0.3, 1.5)  # seconds from "two workers are up, a burst released" to the kill
CATCH_UP_DEADLINE = 180.0  # after the chaos, the pipeline gets this long to converge
SOURCE = "bank"

REDIS_PORT = 6379
# The machine's own command for its Redis server (it keeps nothing on disk).
REDIS_START = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
)


# -- the events ------------------------------------------------------------------


Event = tuple[str, str, str, dict[str, Any]]


def deposits(n: int, accounts: int, seed: int) -> list[Event]:
    """``n`` deposits over ``accounts`` accounts; ``seq`` numbers each account's events."""
    rng = random.Random(seed)
    seqs: dict[str, int] = {}
    events: list[Event] = []
    for _ in range(n):
        account = f"acct-{rng.randrange(accounts):03d}"
        seqs[account] = seqs.get(account, 0) + 1
        amount = rng.randint(-500, 1000)
        events.append(("account", account, "Deposited", {"amount": amount, "seq": seqs[account]}))
    return events


@dataclass(frozen=True)
class AccountTotal:
    events: int
    total: int
    last_seq: int
    violations: int = 0


def expected_totals(events: list[Event]) -> dict[str, AccountTotal]:
    """The read model the inserted outbox rows must produce, computed directly from them."""
    out: dict[str, AccountTotal] = {}
    for _, account, _, payload in events:
        row = out.get(account, AccountTotal(0, 0, 0))
        out[account] = AccountTotal(
            row.events + 1, row.total + payload["amount"], payload["seq"], 0
        )
    return out


class Writer(threading.Thread):
    """Commits the events into the outbox in small transactions, never past its quota.

    The test raises the quota just before each kill, so every kill lands while the
    pipeline is busy with a fresh burst of events, however fast the machine is.
    """

    def __init__(self, url: str, events: list[Event]) -> None:
        super().__init__(name="outbox-writer", daemon=True)
        self.url = url
        self.events = events
        self.written = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self._quota = 0
        self._raised = threading.Condition()

    def allow(self, quota: int) -> None:
        with self._raised:
            self._quota = max(self._quota, quota)
            self._raised.notify_all()

    def _wait_for_quota(self, events: int) -> bool:
        with self._raised:
            while self._quota < events:
                if self.stop.is_set():
                    return False
                self._raised.wait(0.1)
        return not self.stop.is_set()

    def run(self) -> None:
        engine = create_engine(self.url)
        try:
            chunks = [
                self.events[i : i + WRITE_CHUNK] for i in range(0, len(self.events), WRITE_CHUNK)
            ]
            for chunk in chunks:
                if not self._wait_for_quota(self.written + len(chunk)):
                    return
                insert_events(engine, chunk)
                self.written += len(chunk)
        except BaseException as exc:  # reported by the test, not by the thread machinery
            self.error = exc
        finally:
            engine.dispose()


# -- the broker disruptions -----------------------------------------------------------


def _run(command: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def _redis_cli(*args: str) -> str:
    return _run(["redis-cli", "-p", str(REDIS_PORT), *args], timeout=10).stdout.strip()


def _redis_pong() -> bool:
    try:
        return _redis_cli("ping") == "PONG"
    except subprocess.TimeoutExpired:
        return False


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _redis_run_id() -> str:
    client = redis.Redis(host="127.0.0.1", port=REDIS_PORT)
    try:
        return str(client.info("server")["run_id"])
    finally:
        client.close()


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting until {what}")
        time.sleep(0.1)


def _start_redis() -> None:
    """Start the machine's Redis exactly as the machine does, and wait until it answers."""
    subprocess.run(
        shlex.split(REDIS_START),
        check=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _wait(_redis_pong, 30, "redis-cli ping answers PONG")


def flush_and_restart_redis() -> None:
    """Lose every queued message (FLUSHALL), then stop the server and start it again."""
    assert _redis_cli("FLUSHALL") == "OK"
    try:
        _redis_cli("shutdown", "nosave")
    except subprocess.TimeoutExpired:
        pass
    _wait(lambda: not _port_open(REDIS_PORT), 20, f"Redis closed port {REDIS_PORT}")
    _start_redis()


def ensure_redis_running() -> None:
    """Whatever happened in the test, leave the machine's Redis running."""
    if _redis_pong():
        return
    deadline = time.monotonic() + 20
    while _port_open(REDIS_PORT) and time.monotonic() < deadline:
        if _redis_pong():
            return
        time.sleep(0.2)
    _start_redis()


def purge_rabbitmq_queue(queue: str) -> None:
    """Lose every message waiting in the work queue (the server keeps running)."""
    result = _run(["rabbitmqctl", "purge_queue", queue], timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the chaos ------------------------------------------------------------------------


@dataclass
class Chaos:
    """The pipeline's processes, a random worker SIGKILLed at a time (by pid, never by name)."""

    processes: Processes
    config: Path
    rng: random.Random
    workers: list[str] = field(default_factory=list)
    relays: list[str] = field(default_factory=list)
    kills: int = 0

    def start_worker(self) -> None:
        args = ("work", "--config", str(self.config), "-p", "1", "-t", "4")
        self.workers.append(self.processes.start("worker", *args))

    def start_relay(self) -> None:
        self.relays.append(self.processes.start("relay", "relay", "--config", str(self.config)))

    def up(self) -> list[str]:
        return [key for key in self.workers if self.processes.worker_started(key)]

    def wait_until_up(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.up()) < count:
            self.assert_alive("waiting for workers to boot")
            assert time.monotonic() < deadline, "workers did not boot\n" + self.processes.log_tail()
            time.sleep(0.05)

    def kill_random_worker(self, delay: tuple[float, float], ready: Callable[[], None]) -> None:
        """Once two workers are up (consuming and sweeping), call ``ready``, wait a random
        moment, SIGKILL one of the workers that are up and start a replacement. At least one
        worker keeps running through every kill."""
        self.wait_until_up(2)
        ready()
        time.sleep(self.rng.uniform(*delay))
        victim = self.rng.choice(self.up())
        self.workers.remove(victim)
        self.processes.kill(victim)
        self.kills += 1
        self.start_worker()

    def assert_alive(self, moment: str) -> None:
        """No process may exit on its own (a crash on a broker outage is a bug)."""
        dead = {
            key: process.returncode
            for key, process in self.processes.running.items()
            if process.poll() is not None
        }
        assert not dead, f"{moment}: processes exited on their own: {dead}\n" + (
            self.processes.log_tail(60)
        )


def read_model(store: sa.Engine) -> dict[str, AccountTotal]:
    with store.connect() as conn:
        return {
            r.account: AccountTotal(r.events, r.total, r.last_seq, r.violations)
            for r in conn.execute(sa.select(account_totals))
        }


def applied_events(store: sa.Engine) -> int:
    """How many events the read model has counted so far (0 before its table exists)."""
    try:
        with store.connect() as conn:
            return int(conn.execute(sa.select(sa.func.sum(account_totals.c.events))).scalar() or 0)
    except sa.exc.ProgrammingError:
        return 0


def caught_up(store: sa.Engine, events: int) -> bool:
    """Every event applied and every lane's checkpoint at the log head."""
    try:
        with store.connect() as conn:
            applied = conn.execute(sa.select(sa.func.sum(account_totals.c.events))).scalar()
            positions = list(
                conn.execute(
                    sa.select(checkpoints.c.position).where(checkpoints.c.projection == Totals.name)
                ).scalars()
            )
    except sa.exc.ProgrammingError:  # tables not created yet
        return False
    assert (applied or 0) <= events, f"{applied} events applied for {events} written"
    return (
        applied == events
        and len(positions) == Totals.partitions
        and all(p == events for p in positions)
    )


def disrupt_broker(broker: str, queue: str) -> None:
    if broker == "redis":
        flush_and_restart_redis()
    else:
        purge_rabbitmq_queue(queue)


def assert_exact(store: sa.Engine, source: sa.Engine, expected: dict[str, AccountTotal]) -> None:
    """The read model equals what the outbox rows add up to; the log holds each event once;
    nothing is parked, failed or left in the outbox."""
    assert read_model(store) == expected
    with store.connect() as conn:
        logged = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.count(sa.distinct(event_log.c.event_id)),
                sa.func.max(event_log.c.position),
            ).where(event_log.c.source == SOURCE)
        ).one()
        assert tuple(logged) == (EVENTS, EVENTS, EVENTS)
        head = conn.execute(sa.select(log_heads.c.head).where(log_heads.c.source == SOURCE))
        assert head.scalar_one() == EVENTS
        amount = event_log.c.payload["amount"].as_integer()
        from_log = {
            account: (count, total)
            for account, count, total in conn.execute(
                sa.select(event_log.c.aggregate_id, sa.func.count(), sa.func.sum(amount))
                .where(event_log.c.source == SOURCE)
                .group_by(event_log.c.aggregate_id)
            )
        }
        assert from_log == {a: (t.events, t.total) for a, t in expected.items()}
        for table in (parked_events, blocked, failures, parked):
            count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
            assert count == 0, f"{table.name} has {count} rows"
    with source.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar() == 0


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_totals_stay_exact_through_kills_broker_loss_and_double_delivery(
    broker: str,
    broker_for: Callable[[str], dict[str, Any]],
    pg_database: Callable[[], str],
    processes: Processes,
    tmp_path: Path,
) -> None:
    if broker == "redis" and urlsplit(REDIS_URL).port not in (None, REDIS_PORT):
        pytest.skip(f"the Redis restart targets 127.0.0.1:{REDIS_PORT}, tests use {REDIS_URL}")
    rng = random.Random(SEED)
    source_url, store_url = pg_database(), pg_database()
    broker_settings = {**broker_for(broker), "middleware": ["tests.broker_helpers:DeliverTwice"]}
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": store_url},
            "broker": broker_settings,
            "engine": {"batch_size": APPLY_BATCH, "sweep_every": "1s"},
            "sources": {SOURCE: {"url": source_url, "batch_size": 2000}},
        },
    )
    init_outbox(load_settings(config).sources[SOURCE], SOURCE)
    migrate_store(store_url)
    events = deposits(EVENTS, ACCOUNTS, SEED)
    expected = expected_totals(events)
    chaos = Chaos(processes, config, rng)
    writer = Writer(source_url, events)
    disrupt_after = int(EVENTS * rng.uniform(0.35, 0.6))
    disrupted_at: int | None = None
    progress: list[int] = []  # events applied, read after each kill
    redis_run_id = _redis_run_id() if broker == "redis" else ""
    source = create_engine(source_url)
    store = create_engine(store_url)
    try:
        try:
            for _ in range(WORKERS):
                chaos.start_worker()
            chaos.start_relay()
            started = time.monotonic()
            writer.start()
            while writer.is_alive() or chaos.kills < MIN_KILLS or disrupted_at is None:
                chaos.assert_alive(f"after {chaos.kills} kills")
                quota = EVENTS * (chaos.kills + 1) // MIN_KILLS
                chaos.kill_random_worker(KILL_DELAY, functools.partial(writer.allow, quota))
                progress.append(applied_events(store))
                if disrupted_at is None and writer.written >= disrupt_after:
                    disrupted_at = writer.written
                    disrupt_broker(broker, broker_settings["queue"])
            writer.join()
            assert writer.error is None, f"the writer failed: {writer.error!r}"
            assert writer.written == EVENTS
            chaos_seconds = time.monotonic() - started
            behind = EVENTS - applied_events(store)

            deadline = time.monotonic() + CATCH_UP_DEADLINE
            while not caught_up(store, EVENTS):
                chaos.assert_alive("while catching up")
                assert time.monotonic() < deadline, (
                    f"not caught up {CATCH_UP_DEADLINE:.0f}s after the chaos: "
                    f"{applied_events(store)} of {EVENTS} applied\n" + processes.log_tail()
                )
                time.sleep(0.25)
            chaos.assert_alive("after catching up")
            chaos.wait_until_up(WORKERS)  # a worker still importing would die of SIGTERM
            print(
                f"{broker}: {chaos.kills} worker kills, broker disrupted after {disrupted_at} "
                f"events written, chaos {chaos_seconds:.1f}s, {behind} events behind when it "
                f"ended, caught up after {time.monotonic() - started:.1f}s; applied after "
                f"each kill: {progress}"
            )
            codes = processes.stop_all()
            assert set(codes.values()) == {0}, f"exit codes {codes}\n" + processes.log_tail()
        finally:
            writer.stop.set()
            writer.join(timeout=30)
            if broker == "redis":
                ensure_redis_running()

        assert chaos.kills >= MIN_KILLS
        assert progress[-1] > progress[0], f"no progress while workers were killed: {progress}"
        if broker == "redis":
            assert _redis_run_id() != redis_run_id, "Redis was not restarted"
        # Every process is stopped: nothing can change the read model any more.
        assert_exact(store, source, expected)
    finally:
        source.dispose()
        store.dispose()
