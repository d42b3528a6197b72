"""A MariaDB relay leader stalled past its session bound (``wait_timeout``): the server
ends its session, which lets go of its ``GET_LOCK`` and its row locks, and a standby takes
over. When the stalled relay resumes, it may still append the batch it had claimed (the log
skips those rows by ``event_id``, or the new leader does), but nothing it does to the
outbox goes through: its next statement fails, it steps down and stands by. The log holds
every event once, at gap-free positions, in each aggregate's order.

A session that ends while the relay is taking the lead (just after the lock) is given up,
not silently reconnected without the lock (MariaDB, and PostgreSQL likewise).

The bound is made short through the DSN (``init_command`` sets ``wait_timeout``)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from config import Settings
from outbox.db import create_engine
from outbox.errors import SourceError
from outbox.log import EventLog
from outbox.mysql import MySqlOutboxSource
from outbox.postgres import PostgresOutboxSource
from outbox.relay import SourceRelay
from outbox.source import SqlOutboxSource
from outbox.sources import open_source
from tests.cli_helpers import flat_toml
from tests.conftest import MYSQL_ADMIN, PG_ADMIN, _admin_engine
from tests.outbox_helpers import init_outbox, insert_events, migrate_store
from tests.relay_helpers import RelayFleet, wait_for

SOURCE = "auth"
BOUND = 2  # seconds: the leader's session ends once idle this long (wait_timeout)
BATCH = 5


@dataclass
class Stall:
    settings: Settings
    config: Path
    outbox: sa.Engine
    log: EventLog
    written: list[tuple[str, int]]

    def write(self, count: int) -> None:
        """Commit ``count`` events over three aggregates, each numbered in its aggregate."""
        events = []
        for _ in range(count):
            n = len(self.written)
            aggregate = f"user-{n % 3}"
            seq = sum(1 for a, _ in self.written if a == aggregate)
            self.written.append((aggregate, seq))
            events.append(("user", aggregate, "UserEmailChanged", {"seq": seq}))
        insert_events(self.outbox, events)

    def pending(self) -> int:
        with self.outbox.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar_one())

    def assert_logged_once_in_order(self) -> None:
        events = self.log.read(SOURCE)
        assert [e.position for e in events] == list(range(1, len(self.written) + 1))
        assert len({e.event_id for e in events}) == len(events)
        logged = [(e.aggregate_id, e.payload["seq"]) for e in events]
        assert sorted(logged) == sorted(self.written)  # every event once
        for aggregate in {a for a, _ in self.written}:
            seqs = [seq for a, seq in logged if a == aggregate]
            assert seqs == sorted(seqs), f"{aggregate} out of order: {seqs}"
        assert self.pending() == 0


@pytest.fixture
def stall(
    mysql_database: Callable[[], str],
    pg_database: Callable[[], str],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> Iterator[Stall]:
    database = mysql_database()
    url = f"{database}?init_command={quote(f'SET SESSION wait_timeout = {BOUND}')}"
    store = {"url": pg_database()}
    relay = {"standby_retry": "200ms"}
    source = {"url": url, "batch_size": BATCH, "poll_max": "100ms"}
    settings = make_settings(store["url"], {SOURCE: source}, relay=relay)
    config = tmp_path / "readmodel.toml"
    tables = {"store": store, "relay": relay, "logging": {"level": "debug"}}
    config.write_text(flat_toml({**tables, f"sources.{SOURCE}": source}), encoding="utf-8")
    init_outbox(settings.sources[SOURCE])
    migrate_store(settings.store.url)
    stall = Stall(settings, config, create_engine(database), EventLog(settings.store.url), [])
    yield stall
    stall.log.close()
    stall.outbox.dispose()


class GatedLog(EventLog):
    """The event log, whose appends wait at a gate: a relay paused between its claim and
    its append (a SIGSTOP there, or a long garbage collection)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.reached = threading.Event()
        self.gate = threading.Event()

    def append(self, *args: Any, **kwargs: Any) -> Any:
        self.reached.set()
        assert self.gate.wait(60), "the gate was never opened"
        return super().append(*args, **kwargs)


def _relay_all(relay: SourceRelay) -> None:
    while relay.step():
        pass


@pytest.mark.parametrize("resumes", ["after the new leader relayed", "before it relayed"])
def test_a_leader_paused_mid_batch_past_its_bound_steps_down_and_nothing_is_doubled(
    stall: Stall, resumes: str
) -> None:
    stall.write(12)
    url = stall.settings.store.url
    gated = GatedLog(url)
    settings = stall.settings.sources[SOURCE]
    paused = SourceRelay(open_source(SOURCE, settings), gated, stall.settings.relay)
    standby = SourceRelay(open_source(SOURCE, settings), stall.log, stall.settings.relay)
    failed: list[BaseException] = []

    def step() -> None:
        try:
            paused.step()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=step, name="paused-leader")
    try:
        assert paused.source.try_lead()
        assert not standby.source.try_lead()
        thread.start()
        assert gated.reached.wait(10)  # claimed 5 rows (locked), paused before appending
        took = wait_for(standby.source.try_lead, BOUND * 5, "the standby to take over")
        assert took >= BOUND - 1  # not before the paused leader's session was ended
        if resumes == "before it relayed":
            gated.gate.set()
            thread.join(30)
        _relay_all(standby)
        stall.write(6)
        _relay_all(standby)
        gated.gate.set()
        thread.join(30)
        assert not thread.is_alive()

        # The paused relay's batch: appended by one of the two, a duplicate for the other.
        assert paused.totals.relayed + standby.totals.relayed == 18
        assert paused.totals.duplicates + standby.totals.duplicates == BATCH
        if resumes == "after the new leader relayed":
            assert paused.totals.relayed == 0 and paused.totals.duplicates == BATCH
        # Its acknowledgement failed (the session is gone): it leads no more, and cannot.
        assert len(failed) == 1 and isinstance(failed[0], SourceError), failed
        assert "acknowledging rows failed" in str(failed[0])
        assert not paused.source.leading
        assert not paused.source.try_lead()
        stall.write(4)
        _relay_all(standby)
        stall.assert_logged_once_in_order()
    finally:
        gated.gate.set()
        thread.join(30)
        paused.source.close()
        standby.source.close()
        gated.close()


def _kill_own_session(conn: sa.Connection) -> None:
    """End ``conn``'s session from another one, as the server does past ``wait_timeout``."""
    postgres = conn.dialect.name == "postgresql"
    session = conn.exec_driver_sql(
        "SELECT pg_backend_pid()" if postgres else "SELECT CONNECTION_ID()"
    ).scalar_one()
    conn.commit()
    admin = _admin_engine(PG_ADMIN if postgres else MYSQL_ADMIN)
    try:
        with admin.connect() as other:
            other.exec_driver_sql(
                f"SELECT pg_terminate_backend({int(session)})"
                if postgres
                else f"KILL {int(session)}"
            )
    finally:
        admin.dispose()


class EndedWhileTakingTheLead(MySqlOutboxSource):
    """A source whose session the server ends just after it took ``GET_LOCK`` (the relay
    stalled there past the bound, or its connection was dropped)."""

    def _on_lead(self, conn: sa.Connection) -> None:
        _kill_own_session(conn)
        super()._on_lead(conn)


class PgEndedWhileTakingTheLead(PostgresOutboxSource):
    """:class:`EndedWhileTakingTheLead` on PostgreSQL (a session advisory lock)."""

    def _on_lead(self, conn: sa.Connection) -> None:
        _kill_own_session(conn)
        super()._on_lead(conn)


def test_a_postgresql_session_ended_while_taking_the_lead_is_not_led_on(
    pg_database: Callable[[], str], make_settings: Callable[..., Settings]
) -> None:
    url = pg_database()
    settings = make_settings(pg_database(), {SOURCE: {"url": url}}).sources[SOURCE]
    init_outbox(settings)
    ended = PgEndedWhileTakingTheLead(SOURCE, settings)
    other = open_source(SOURCE, settings)
    try:
        with pytest.raises(SourceError, match="session"):
            ended.try_lead()
        assert not ended.leading
        assert other.try_lead()
    finally:
        ended.close()
        other.close()


def test_a_session_ended_while_taking_the_lead_is_not_led_on(stall: Stall) -> None:
    """SQLAlchemy reconnects a connection used again after a disconnect was rolled back:
    the statements that set the leader's session up (which absorb failures) went on in a
    new session that holds no lock, and the relay led on it beside the next leader."""
    settings = stall.settings.sources[SOURCE]
    ended = EndedWhileTakingTheLead(SOURCE, settings)
    other = open_source(SOURCE, settings)
    assert isinstance(other, SqlOutboxSource)
    stall.write(3)
    try:
        with pytest.raises(SourceError, match="session"):
            ended.try_lead()
        assert not ended.leading
        assert other.try_lead()  # the lock went with the session
        with pytest.raises(SourceError):
            ended.claim(BATCH)
        assert len(other.claim(BATCH)) == 3
    finally:
        ended.close()
        other.close()


def _stepped_down(text: str) -> bool:
    """The relay's next statement on its ended session failed, and it stands by since."""
    failed = text.find("relay step failed")
    return 0 <= failed < text.rfind("standing by")


def test_a_sigstopped_relay_past_its_bound_resumes_as_a_standby(stall: Stall) -> None:
    """Two ``readmodel relay`` processes; the leader is SIGSTOPped while events are written,
    longer than its session bound; the standby takes over; the stopped one is SIGCONTed and
    stands by: it does not lead again while the new leader lives."""
    fleet = RelayFleet(stall.config, stall.config.parent)
    stopped = None
    try:
        first = fleet.start()
        fleet.wait_for_leader(30)
        second = fleet.start()
        wait_for(second.is_up, 30, "the standby to start")
        stall.write(30)
        wait_for(lambda: stall.pending() == 0, 30, "the leader to relay")
        stopped = first.process.pid
        os.kill(stopped, signal.SIGSTOP)
        stall.write(30)  # the stopped leader claims none of these
        wait_for(second.took_over, BOUND * 10, "the standby to take over")
        wait_for(lambda: stall.pending() == 0, 30, "the new leader to relay")
        os.kill(stopped, signal.SIGCONT)
        stopped = None
        stall.write(30)
        wait_for(lambda: _stepped_down(first.log_text()), 30, "the resumed relay to step down")
        wait_for(lambda: stall.pending() == 0, 30, "the new leader to relay")
        time.sleep(1)  # a few standby retries of the resumed relay
        stall.write(30)
        wait_for(lambda: stall.pending() == 0, 30, "the new leader to relay")
        fleet.check_alive()
        assert first.log_text().count("leading source") == 1, fleet.logs()
        text = first.log_text()
        assert text.rfind("standing by") > text.find("relay step failed"), fleet.logs()
        stall.assert_logged_once_in_order()
        assert set(fleet.stop().values()) == {0}, fleet.logs()
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        fleet.kill_all()
