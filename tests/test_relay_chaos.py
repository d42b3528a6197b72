"""Fault injection: the relay is SIGKILLed at random moments while a service writes its outbox.

A writer process (``tests/chaos_writer.py``) commits 20,000 events over 500
aggregates into a PostgreSQL or MariaDB outbox. Meanwhile two ``readmodel relay``
processes run against it (the active relay and a hot standby); at random moments
one of them (usually the leader) is SIGKILLed and a replacement is started, at
least ten times per run (now and then both at once). Afterwards the event log
must hold every event exactly once, at gap-free positions, with each aggregate's
events in the order the writer committed them, nothing may be parked, the outbox
must have nothing left undelivered, and the last relays must stop cleanly on SIGTERM.

The random choices come from a fixed seed per case (``READMODEL_TEST_CHAOS_SEED=N``
varies it for soak runs); the timing of course varies. After a failure, the test's
tmp_path holds each relay's log, the writer's log and summary, and ``chaos.log``
(when each relay was started and killed); an order failure also shows where each
event of the first bad aggregate sits in the log and in the outbox.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from config import Settings
from outbox.db import create_engine
from outbox.envelope import Envelope
from outbox.log import EventLog
from tests.cli_helpers import flat_toml
from tests.outbox_helpers import init_outbox, migrate_store
from tests.relay_helpers import RelayFleet

pytestmark = pytest.mark.chaos

REPO = Path(__file__).resolve().parent.parent
SOURCE = "chaos"
EVENTS = 20_000
AGGREGATES = 500
WRITERS = 4  # concurrent writer connections, each owning a disjoint set of aggregates
WRITE_SECONDS = 9.0  # how long the writer spreads its commits over
MIN_KILLS = 10
MIN_LEADER_KILLS = 6  # of those, kills of the active relay (the others hit the standby)
MIN_TAKEOVERS = 2  # times a running standby took over from a killed leader
KILL_INTERVAL = (0.3, 1.2)  # seconds between two kills
DRAIN_DEADLINE = 90.0  # after the writer is done, the relays get this long to catch up


@pytest.fixture
def source_url(
    request: pytest.FixtureRequest,
    pg_database: Callable[[], str],
    mysql_database: Callable[[], str],
) -> str:
    return {"postgresql": pg_database, "mysql": mysql_database}[request.param]()


@pytest.fixture
def chaos_setup(
    source_url: str,
    on_dispatch: str,
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> Iterator[tuple[Settings, Path]]:
    """Settings, and the same settings as a TOML file for the relay processes."""
    store = {"url": pg_database()}
    relay = {"standby_retry": "200ms"}
    source = {
        "url": source_url,
        "on_dispatch": on_dispatch,
        "batch_size": 200,
        "poll_max": "250ms",
    }
    settings = make_settings(store["url"], {SOURCE: source}, relay=relay)
    config = tmp_path / "readmodel.toml"
    config.write_text(
        flat_toml(
            {
                "store": store,
                "relay": relay,
                "logging": {"level": "debug"},  # standbys log "standing by" when up
                f"sources.{SOURCE}": source,
            }
        ),
        encoding="utf-8",
    )
    init_outbox(settings.sources[SOURCE])
    migrate_store(settings.store.url)
    yield settings, config


@pytest.fixture
def on_dispatch(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.parametrize("on_dispatch", ["delete", "mark"], indirect=True)
@pytest.mark.parametrize("source_url", ["postgresql", "mysql"], indirect=True)
def test_sigkilled_relays_deliver_every_event_once_in_aggregate_order(
    chaos_setup: tuple[Settings, Path], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    settings, config = chaos_setup
    on_dispatch = settings.sources[SOURCE].on_dispatch
    # A fixed seed per case; READMODEL_TEST_CHAOS_SEED=N varies it (soak runs).
    seed = zlib.crc32(request.node.callspec.id.encode()) ^ int(
        os.environ.get("READMODEL_TEST_CHAOS_SEED", "0")
    )
    log = EventLog(settings.store.url)
    source_db = create_engine(settings.sources[SOURCE].url, pool_size=1, max_overflow=0)
    try:
        counts = _write_while_killing_relays(
            settings, config, log, source_db, random.Random(seed), tmp_path
        )
        context = f"seed={seed}, logs in {tmp_path}"

        events = log.read(SOURCE, limit=EVENTS + 1000)
        assert log.head(SOURCE) == EVENTS
        assert _logged_rows(log.engine) == EVENTS
        assert [e.position for e in events] == list(range(1, EVENTS + 1))
        assert len({e.event_id for e in events}) == EVENTS

        sequences: dict[str, list[int]] = defaultdict(list)
        for event in events:
            assert event.aggregate_id == event.payload["agg"]
            sequences[event.aggregate_id].append(event.payload["k"])
        expected = {agg: list(range(1, n + 1)) for agg, n in counts.items() if n}
        wrong = sorted(agg for agg in sequences.keys() - expected.keys())
        wrong += sorted(agg for agg in expected if sequences.get(agg) != expected[agg])
        assert not wrong, (
            f"{len(wrong)} aggregates lost, duplicated or reordered events ({context}); "
            f"first: {wrong[0]} logged k = {sequences.get(wrong[0])}\n"
            + _trace(wrong[0], events, source_db)
        )

        assert log.parked_outbox_count(SOURCE) == 0
        assert _undelivered(source_db, on_dispatch=on_dispatch) == 0
        assert _outbox_rows(source_db) == (EVENTS if on_dispatch == "mark" else 0)
    finally:
        log.close()
        source_db.dispose()


def _write_while_killing_relays(
    settings: Settings,
    config: Path,
    log: EventLog,
    source_db: sa.Engine,
    rng: random.Random,
    directory: Path,
) -> dict[str, int]:
    """Run the writer and two relays, SIGKILL relays until enough kills have landed, let the
    survivors catch up and stop them; returns the writer's event count per aggregate."""
    on_dispatch = settings.sources[SOURCE].on_dispatch
    summary_path = directory / "writer-summary.json"
    writer_log = directory / "writer.log"
    fleet = RelayFleet(config, directory)
    writer: subprocess.Popen[bytes] | None = None
    started = time.monotonic()
    try:
        fleet.start()
        fleet.start()
        with open(writer_log, "wb") as out:
            writer = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.chaos_writer",
                    f"--url={settings.sources[SOURCE].url}",
                    f"--events={EVENTS}",
                    f"--aggregates={AGGREGATES}",
                    f"--writers={WRITERS}",
                    f"--seconds={WRITE_SECONDS}",
                    f"--seed={rng.randrange(1 << 30)}",
                    f"--summary={summary_path}",
                ],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        # Kill at random moments until the writer is done and enough kills have landed.
        kills_while_writing = 0
        kill_heads: list[int] = []  # the log head right after each kill, for the report
        chaos_deadline = time.monotonic() + WRITE_SECONDS + 60
        while (
            writer.poll() is None
            or fleet.kills < MIN_KILLS
            or fleet.leader_kills < MIN_LEADER_KILLS
            or fleet.takeovers() < MIN_TAKEOVERS
        ):
            assert time.monotonic() < chaos_deadline, (
                f"the writer did not finish, or relays did not take the lead\n{fleet.logs()}"
            )
            time.sleep(rng.uniform(*KILL_INTERVAL))
            fleet.check_alive()
            leader = fleet.leader()
            if leader is None:
                continue  # nobody leads yet (relays are still starting): kill the next one
            standby_up = all(r.is_up() for r in fleet.alive)
            if not standby_up and rng.random() < 0.5:
                continue  # often give the new standby time to start, so that it takes over
            chance = rng.random()
            if chance < 0.1:
                victims = list(fleet.alive)  # now and then no relay runs at all for a moment
            elif chance < 0.85:
                victims = [leader]
            else:
                victims = [rng.choice([r for r in fleet.alive if r is not leader])]
            for victim in victims:
                fleet.kill(victim, was_leader=victim is leader)
                kills_while_writing += writer.poll() is None
            kill_heads.append(log.head(SOURCE))
            for _ in victims:
                fleet.start()
        assert writer.returncode == 0, f"the writer failed:\n{writer_log.read_text()}"
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        assert summary["events"] == EVENTS
        chaos_done = time.monotonic() - started

        # Let the survivors catch up: the log is complete and the outbox fully acknowledged.
        drain_deadline = time.monotonic() + DRAIN_DEADLINE
        while True:
            fleet.check_alive()
            head = log.head(SOURCE)
            pending = _undelivered(source_db, on_dispatch=on_dispatch)
            if head >= EVENTS and pending == 0:
                break
            assert time.monotonic() < drain_deadline, (
                f"relays did not catch up within {DRAIN_DEADLINE}s: log head {head}, "
                f"{pending} outbox rows undelivered\n{fleet.logs()}"
            )
            time.sleep(0.2)
        drained = time.monotonic() - started

        # A relay that has started must stop cleanly on SIGTERM.
        fleet.wait_for_leader(timeout=30)
        statuses = fleet.stop()
        assert statuses and all(code == 0 for code in statuses.values()), (
            f"relays did not stop cleanly on SIGTERM: {statuses}\n{fleet.logs()}"
        )
        assert summary["retries"] == 0, "the relay's locks deadlocked the service's inserts"
        print(
            f"{fleet.kills} kills ({fleet.leader_kills} of the active relay, "
            f"{kills_while_writing} while writing, {fleet.takeovers()} standby takeovers), "
            f"log head after kills {kill_heads}, {len(fleet.gone)} relay processes, "
            f"writer: {summary['transactions']} transactions in {summary['seconds']}s "
            f"({summary['retries']} retried after deadlocks); "
            f"chaos until {chaos_done:.1f}s, drained at {drained:.1f}s, "
            f"stopped at {time.monotonic() - started:.1f}s ({directory})"
        )
        return {str(k): int(v) for k, v in summary["counts"].items()}
    finally:
        fleet.kill_all()
        if writer is not None:
            if writer.poll() is None:
                writer.kill()
            writer.wait()


def _trace(aggregate: str, events: list[Envelope], source_db: sa.Engine) -> str:
    """Where each event of ``aggregate`` sits in the log and (if still there) in the outbox."""
    with source_db.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT id, seq, dispatched_at FROM outbox WHERE aggregateid = :agg ORDER BY seq"
            ),
            {"agg": aggregate},
        ).all()
    outbox = {str(row[0]): (row[1], row[2]) for row in rows}
    lines = ["k, log position, outbox seq, dispatched_at:"]
    for event in events:
        if event.aggregate_id == aggregate:
            seq, dispatched = outbox.get(event.event_id, (None, None))
            lines.append(f"  {event.payload['k']}, {event.position}, {seq}, {dispatched}")
    return "\n".join(lines)


def _undelivered(engine: sa.Engine, *, on_dispatch: str) -> int:
    where = " WHERE dispatched_at IS NULL" if on_dispatch == "mark" else ""
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM outbox{where}").scalar_one())


def _outbox_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar_one())


def _logged_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM rm_event_log WHERE source = :source"),
                {"source": SOURCE},
            ).scalar_one()
        )
