"""An event whose handler gets stuck on every attempt is parked, not retried for ever.

A stuck handler makes its worker exit (code 4) before its batch commits, so the engine's
own failure counting never ran: a handler blocking on every attempt made every restarted
worker exit again, the lane never moved and nothing was parked. Each stuck attempt is now
counted (``rm_failures`` / ``rm_handler_failures``, ``last_error`` starting with
``HandlerStuck``), and a worker starting parks every event stuck ``engine.max_attempts``
times, holding its aggregate; the rest flows, ``parked retry`` applies it once fixed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from outbox.db import create_engine
from outbox.log import EventLog
from projections import stuck_events
from projections.engine import ProjectionEngine
from projections.handler_timeout import StuckHandler
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.sql_store import SqlStore
from projections.store import Store
from projections.store_tables import failures, parked_events
from projections.stuck_events import STUCK_ERROR, counting, park_stuck
from tests.broker_helpers import Processes, wait_until
from tests.cache_helpers import append
from tests.cli_helpers import run_cli, write_config
from tests.document_fixtures import DocTotals
from tests.projection_fixtures import HANG_HOW, HANG_ON, Totals, log_events, read_totals

EXIT_STUCK = 4
STUCK = "acct-1"
# (aggregate id, event type, payload): acct-1's first event (position 2) gets stuck.
EVENTS = [
    ("acct-0", "Deposited", {"amount": 10, "seq": 1}),
    (STUCK, "Deposited", {"amount": 20, "seq": 1}),
    ("acct-0", "Deposited", {"amount": 30, "seq": 2}),
    (STUCK, "Deposited", {"amount": 40, "seq": 2}),
]


@pytest.fixture(params=["sql", "mongo"])
def engine_of(
    request: pytest.FixtureRequest,
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
) -> Iterator[Callable[[int], ProjectionEngine]]:
    """Factory: an engine over a log of :data:`EVENTS` (source ``bank``) and a SQL store
    (:class:`Totals`) or a MongoDB one (:class:`DocTotals`), with ``max_attempts``."""
    url = pg_database()
    log = EventLog(url)
    log.create_tables()
    store: Store
    if request.param == "sql":
        projection: Any = Totals()
        store = SqlStore(url, engine=log.engine)
    else:
        projection = DocTotals()
        store = MongoStore(mongo_database())
    store.create_tables([projection])
    log_events(log, EVENTS, source="bank", aggregate_type="account")
    engines: list[ProjectionEngine] = []

    def make(max_attempts: int) -> ProjectionEngine:
        engine = ProjectionEngine(
            LogReader(log), [projection], {projection.store: store}, max_attempts=max_attempts
        )
        engines.append(engine)
        return engine

    yield make
    if isinstance(store, MongoStore):
        store.close()
    log.close()


def _stuck_once(engine: ProjectionEngine, position: int) -> StuckHandler:
    """What a worker's watchdog does for a handler stuck on the event at ``position``."""
    projection = next(iter(engine.projections.values()))
    event = engine.reader.at_positions("bank", [position])[0]
    told: list[StuckHandler] = []
    action = counting(told.append, engine.store_of(projection), engine.lane_of(projection, event))
    action(StuckHandler(projection.name, "bank", position, "Deposited", 9.0, event))
    return told[0]


def test_stuck_attempts_are_counted_and_the_event_parked_at_max_attempts(
    engine_of: Callable[[int], ProjectionEngine],
) -> None:
    engine = engine_of(2)
    projection = next(iter(engine.projections.values()))
    store = engine.store_of(projection)

    first = _stuck_once(engine, 2)
    assert first.attempts == 1
    assert park_stuck(engine) == 0  # one stuck attempt of two
    assert _stuck_once(engine, 2).attempts == 2
    # Failures of another kind are the engine's own business: never parked here.
    lane = engine.lane_of(projection, engine.reader.at_positions("bank", [3])[0])
    for _ in range(3):
        store.record_failure(lane, engine.reader.at_positions("bank", [3])[0], "RuntimeError()")
    assert park_stuck(engine_of(3)) == 0  # below another deployment's max_attempts

    assert park_stuck(engine) == 1
    engine.catch_up()
    parked = store.parked(projection.name)
    assert [(p.position, p.attempts) for p in parked if p.position == 2] == [(2, 2)]
    entry = next(p for p in parked if p.position == 2)
    assert "stuck 2 times" in entry.reason
    assert (entry.detail or "").startswith(STUCK_ERROR)
    assert {p.position for p in parked} == {2, 4}  # acct-1's later event held behind it
    assert park_stuck(engine) == 0  # parked already: not again at the next start


def test_an_event_applied_meanwhile_is_not_parked(
    engine_of: Callable[[int], ProjectionEngine],
) -> None:
    """The handler came back on a later attempt and the lane passed the event: its stuck
    attempts park nothing."""
    engine = engine_of(2)
    projection = next(iter(engine.projections.values()))
    _stuck_once(engine, 2)
    _stuck_once(engine, 2)
    engine.catch_up()
    assert park_stuck(engine) == 0
    assert engine.store_of(projection).parked(projection.name) == []


def _failures(store: sa.Engine) -> list[tuple[int, int, str]]:
    with store.connect() as conn:
        rows = conn.execute(
            sa.select(failures.c.position, failures.c.attempts, failures.c.last_error)
        )
        return [(r.position, r.attempts, r.last_error) for r in rows]


def _parked_positions(store: sa.Engine) -> list[int]:
    with store.connect() as conn:
        rows = conn.execute(sa.select(parked_events.c.position).order_by(parked_events.c.position))
        return [row.position for row in rows]


@pytest.mark.parametrize(
    ("store_kind", "worker_processes"), [("postgresql", "1"), ("sqlite", "1"), ("sqlite", "2")]
)
def test_a_worker_stuck_at_every_attempt_parks_the_event_on_its_third_start(
    store_kind: str,
    worker_processes: str,
    broker_for: Callable[[str], dict[str, Any]],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    processes: Processes,
    tmp_path: Path,
) -> None:
    """Real worker processes on Redis; ``acct-1``'s handler reads a socket no one writes to
    on every attempt. Two starts exit 4, each counting an attempt; the third parks the event
    (``max_attempts = 2``) and applies the rest; ``parked retry`` applies it once the handler
    is fixed (here: a process without the hang). On SQLite the stuck batch holds the write
    lock until the process dies: each attempt is journalled beside the database file and
    counted as the next worker starts (before, none was ever counted: exit 4 for ever); with
    ``-p 2``, by one of the two processes starting together."""
    store_url = pg_database() if store_kind == "postgresql" else sqlite_database()
    journal = Path(store_url.removeprefix("sqlite:///") + ".stuck-attempts")
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": store_url},
            "broker": broker_for("redis"),
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
    append(log, "bank", [("account", a, t, p) for a, t, p in EVENTS])
    env = {HANG_ON: STUCK, HANG_HOW: "socket"}
    command = ("work", "--config", str(config), "-p", worker_processes, "-t", "2", "--log-json")
    try:
        for attempt in (1, 2):
            key = processes.start("work", *command, env=env)
            process = processes.running[key]
            assert wait_until(lambda: process.poll() is not None, 60), processes.log_tail()  # noqa: B023
            assert process.returncode == EXIT_STUCK, processes.log_tail()
            processes.running.pop(key)
            # On SQLite, journalled (counted in the store as a worker starts: with -p 2,
            # maybe by the other process, which waited for the stuck one's write lock).
            lines = journal.read_text().splitlines() if journal.exists() else []
            assert all(json.loads(line)["error"].startswith(STUCK_ERROR) for line in lines)
            if store_kind == "sqlite" and worker_processes == "1":
                assert len(lines) == 1
            failed = _failures(store)
            assert sum(attempts for _, attempts, _ in failed) + len(lines) == attempt
            assert all(error.startswith(STUCK_ERROR) for _, _, error in failed)
            assert {position for position, _, _ in failed} <= {2}

        last = processes.start("work", *command, env=env)
        assert wait_until(lambda: processes.worker_started(last), 60), processes.log_tail()
        assert wait_until(lambda: _parked_positions(store) == [2, 4], 30), processes.log_tail()
        time.sleep(4)  # past the bound and stuck_exit_after: the handler is not run again
        assert processes.running[last].poll() is None, processes.log_tail()
        assert read_totals(store) == {"acct-0": (2, 40, 0)}
        listed = run_cli(["parked", "list", "--json", "--config", str(config)])
        assert listed.exit_code == 0, listed.output
        [entry] = [e for e in json.loads(listed.output) if e["position"] == 2]
        assert "stuck 2 times" in entry["reason"], entry
        assert not journal.exists()
        assert processes.stop_all()[last] == 0, processes.log_tail()

        retried = run_cli(
            ["parked", "retry", "--projection", "totals", "--yes", "--config", str(config)]
        )
        assert retried.exit_code == 0, retried.output
        assert read_totals(store) == {"acct-0": (2, 40, 0), STUCK: (2, 60, 0)}
    finally:
        log.close()
        store.dispose()


def test_a_store_that_cannot_record_the_attempt_does_not_hold_up_the_exit(
    sqlite_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's only write lock held elsewhere (as a stuck batch may hold it): recording the
    attempt would wait the busy timeout (30 s); the exit goes on after ``RECORD_WAIT``,
    the attempt not counted."""
    monkeypatch.setattr(stuck_events, "RECORD_WAIT", 0.5)
    url = sqlite_database()
    log = EventLog(url)
    log.create_tables()
    store = SqlStore(url, engine=log.engine)
    store.create_tables([Totals()])
    log_events(log, EVENTS, source="bank", aggregate_type="account")
    engine = ProjectionEngine(LogReader(log), [Totals()], {"default": store}, max_attempts=2)
    holder = sa.create_engine(sa.make_url(url), poolclass=sa.NullPool)
    try:
        with holder.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            started = time.monotonic()
            told = _stuck_once(engine, 2)
            assert time.monotonic() - started < 3
            assert told.attempts is None
            conn.exec_driver_sql("ROLLBACK")
    finally:
        holder.dispose()
        log.close()
