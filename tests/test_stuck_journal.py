"""Stuck attempts a dying worker could not count in its SQLite store are journalled.

On SQLite the stuck batch holds the database's one write lock until its process dies: the
exiting worker could not count the stuck attempt within ``RECORD_WAIT``, so a handler stuck
on every attempt made every restarted worker exit 4 again, nothing parked. The attempt now
goes to a journal file beside the database, and a worker starting (``park_stuck``) counts it
first: exactly once (a start dying half-way, a late write of the dying worker), bad lines
reported and skipped, the file removed once counted, and its lock file with it.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from projections import stuck_events
from projections.engine import ProjectionEngine
from projections.handler_timeout import StuckHandler
from projections.sql_store import SqlStore
from projections.stuck_events import STUCK_ERROR, counting, park_stuck
from projections.stuck_journal import attempt_of
from tests.broker_helpers import wait_until
from tests.projection_fixtures import Totals, engine_on, log_events

STUCK = "acct-1"
EVENTS = [
    ("acct-0", "Deposited", {"amount": 10, "seq": 1}),
    (STUCK, "Deposited", {"amount": 20, "seq": 1}),  # position 2: its handler gets stuck
    ("acct-0", "Deposited", {"amount": 30, "seq": 2}),
    (STUCK, "Deposited", {"amount": 40, "seq": 2}),
]


@pytest.fixture
def sqlite_engine(
    sqlite_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, ProjectionEngine]]:
    """``(url, engine)``: the log and :class:`Totals` in one SQLite file, ``max_attempts``
    2, ``RECORD_WAIT`` 0.5 s."""
    monkeypatch.setattr(stuck_events, "RECORD_WAIT", 0.5)
    url = sqlite_database()
    with engine_on(url, [Totals()], max_attempts=2) as (log, _, engine):
        log_events(log, EVENTS, source="bank", aggregate_type="account")
        yield url, engine


def _store(engine: ProjectionEngine) -> SqlStore:
    store = engine.stores["default"]
    assert isinstance(store, SqlStore)
    return store


def _journal(engine: ProjectionEngine) -> Path:
    path = _store(engine).stuck_journal()
    assert path is not None
    return path


@pytest.fixture
def write_locked(sqlite_engine: tuple[str, ProjectionEngine]) -> Iterator[Callable[[], None]]:
    """SQLite's write lock held by another connection, as the stuck batch holds it; the
    release it returns lets it go (as the dying worker's exit does)."""
    holder = sa.create_engine(sa.make_url(sqlite_engine[0]), poolclass=sa.NullPool)
    conn = holder.connect()
    conn.exec_driver_sql("BEGIN IMMEDIATE")

    def release() -> None:
        if not conn.closed:
            conn.exec_driver_sql("ROLLBACK")
            conn.close()

    yield release
    release()
    holder.dispose()


class Dying:
    """The store as the dying worker sees it: its recording of the stuck attempt waits on
    the lock until the process is gone (here: until the test ends, then fails), so it never
    counts the attempt, whenever the next start comes."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.dead = threading.Event()

    def record_failure(self, *args: object) -> int:
        self.dead.wait(60)
        raise RuntimeError("the process is gone")

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


@pytest.fixture
def dying(sqlite_engine: tuple[str, ProjectionEngine]) -> Iterator[Dying]:
    store = Dying(_store(sqlite_engine[1]))
    yield store
    store.dead.set()


def _stuck_once(engine: ProjectionEngine, store: object = None) -> StuckHandler:
    """What a worker's watchdog does for a handler stuck on the event at position 2 (the
    store as ``store`` sees it: a :class:`Dying` one, the real one by default)."""
    projection = engine.projections["totals"]
    event = engine.reader.at_positions("bank", [2])[0]
    told: list[StuckHandler] = []
    store = store or _store(engine)
    action = counting(told.append, store, engine.lane_of(projection, event))  # type: ignore[arg-type]
    action(StuckHandler("totals", "bank", 2, "Deposited", 9.0, event))
    return told[0]


def _attempts(engine: ProjectionEngine) -> int:
    rows = _store(engine).failing("totals", "bank")
    return sum(int(row["attempts"]) for row in rows)


def _parked(engine: ProjectionEngine) -> list[tuple[int, int]]:
    return [(p.position, p.attempts) for p in _store(engine).parked("totals")]


def _lock_file(engine: ProjectionEngine) -> Path:
    journal = _journal(engine)
    return journal.with_name(journal.name + ".lock")


def _waits_for_flock(inode: int) -> bool:
    """Some process waits (``flock``) on the file whose inode is ``inode``."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "->" and fields[2] == "FLOCK":
            if int(fields[6].rsplit(":", 1)[1]) == inode:
                return True
    return False


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_store_locked_by_the_stuck_batch_journals_the_attempt_in_time(
    sqlite_engine: tuple[str, ProjectionEngine],
    write_locked: Callable[[], None],
) -> None:
    """SQLite's write lock held (by the stuck batch): the attempt is journalled after
    ``RECORD_WAIT``. Should the lock go before the process ends (another batch committed),
    the recording thread still counts it: the next start does not count it again."""
    _, engine = sqlite_engine
    journal = _journal(engine)
    assert journal.parent == Path(sqlite_engine[0].removeprefix("sqlite:///")).parent
    started = time.monotonic()
    assert _stuck_once(engine).attempts is None
    assert time.monotonic() - started < 3
    [line] = _lines(journal)
    assert (line["projection"], line["source"], line["position"]) == ("totals", "bank", 2)
    assert str(line["error"]).startswith(STUCK_ERROR)
    assert attempt_of(str(line["error"])) == line["attempt"]

    write_locked()
    assert wait_until(lambda: _attempts(engine) == 1, 10)  # the late write
    assert park_stuck(engine) == 0
    assert _attempts(engine) == 1
    assert not journal.exists()


def test_an_attempt_the_dying_worker_could_not_count_is_counted_at_the_next_start(
    sqlite_engine: tuple[str, ProjectionEngine], dying: Dying
) -> None:
    _, engine = sqlite_engine
    journal = _journal(engine)
    assert _stuck_once(engine, dying).attempts is None
    assert len(_lines(journal)) == 1

    assert park_stuck(engine) == 0  # one stuck attempt of two: counted, not parked
    assert _attempts(engine) == 1
    assert not journal.exists()
    assert park_stuck(engine) == 0 and _attempts(engine) == 1  # counted once

    assert _stuck_once(engine).attempts == 2  # a store that answers counts it at once
    assert not journal.exists()
    assert park_stuck(engine) == 1
    engine.catch_up()
    assert _parked(engine) == [(2, 2), (4, 0)]  # acct-1's later event held behind it


def test_an_event_journalled_at_every_exit_is_parked_after_max_attempts(
    sqlite_engine: tuple[str, ProjectionEngine], dying: Dying
) -> None:
    _, engine = sqlite_engine
    for start in (1, 2):
        assert _stuck_once(engine, dying).attempts is None
        assert park_stuck(engine) == (1 if start == 2 else 0)
    engine.catch_up()
    assert _parked(engine) == [(2, 2), (4, 0)]
    assert not _journal(engine).exists()
    assert park_stuck(engine) == 0  # parked already
    assert _parked(engine) == [(2, 2), (4, 0)]


def test_a_start_that_dies_half_way_through_the_journal_counts_each_attempt_once(
    sqlite_engine: tuple[str, ProjectionEngine],
    dying: Dying,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three journalled attempts (max_attempts 5); the first start dies after counting the
    second, the next one counts the third alone."""
    _, engine = sqlite_engine
    engine.max_attempts = 5
    for _ in range(3):
        assert _stuck_once(engine, dying).attempts is None
    ids = [line["attempt"] for line in _lines(_journal(engine))]
    store = _store(engine)
    record = store.record_failure
    calls: list[str] = []

    def dies(*args: Any) -> int:
        if len(calls) == 2:
            raise KeyboardInterrupt  # the start killed half-way (not an Exception)
        calls.append(str(args[2]))
        return record(*args)

    monkeypatch.setattr(store, "record_failure", dies)
    with pytest.raises(KeyboardInterrupt):
        park_stuck(engine)
    assert _attempts(engine) == 2
    assert [attempt_of(error) for error in calls] == ids[:2]
    monkeypatch.setattr(store, "record_failure", record)

    assert park_stuck(engine) == 0
    assert _attempts(engine) == 3
    [row] = store.failing("totals")
    assert attempt_of(str(row["last_error"])) == ids[2]
    journal = _journal(engine)
    assert not journal.exists()
    assert not journal.with_name(journal.name + ".replaying").exists()


def test_a_start_whose_store_fails_half_way_keeps_only_what_it_did_not_count(
    sqlite_engine: tuple[str, ProjectionEngine],
    dying: Dying,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store fails on the second of three journalled attempts: the worker goes on
    (logged) and counts the event's next attempt itself, in time; the next start counts the
    two left, not the first again (``last_error`` no longer names it)."""
    _, engine = sqlite_engine
    engine.max_attempts = 9
    for _ in range(3):
        assert _stuck_once(engine, dying).attempts is None
    store = _store(engine)
    record = store.record_failure
    calls = []

    def fails(*args: Any) -> int:
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("database is locked")
        return record(*args)

    monkeypatch.setattr(store, "record_failure", fails)
    with capture_logs() as logs:
        assert park_stuck(engine) == 0  # the worker starts all the same
    assert any("journalled stuck attempts failed" in e["event"] for e in logs)
    monkeypatch.setattr(store, "record_failure", record)
    assert _attempts(engine) == 1
    assert _stuck_once(engine).attempts == 2  # counted by the worker itself

    assert park_stuck(engine) == 0
    assert _attempts(engine) == 4
    journal = _journal(engine)
    assert not journal.exists()
    assert not journal.with_name(journal.name + ".replaying").exists()


def test_bad_journal_lines_are_reported_and_skipped(
    sqlite_engine: tuple[str, ProjectionEngine], dying: Dying
) -> None:
    """A line cut short (a kill mid-write), one that is not an attempt and one of a
    projection this worker does not run: each logged, the good line counted."""
    _, engine = sqlite_engine
    assert _stuck_once(engine, dying).attempts is None
    journal = _journal(engine)
    good = journal.read_text()
    unknown = json.loads(good)
    unknown["projection"] = "gone"
    journal.write_text(
        '{"attempt": "1234", "projection": "tot\n'
        + "not json\n"
        + json.dumps(unknown)
        + "\n"
        + good
        + good[: len(good) // 2]
    )
    with capture_logs() as logs:
        assert park_stuck(engine) == 0
    assert _attempts(engine) == 1
    assert not journal.exists()
    unreadable = [e for e in logs if "cannot be read" in e["event"]]
    assert [e["line"] for e in unreadable] == [1, 2, 5]
    assert all(e["log_level"] == "error" and e["journal"] == str(journal) for e in unreadable)
    [dropped] = [e for e in logs if "does not know" in e["event"]]
    assert dropped["projection"] == "gone"


def test_starts_at_once_count_the_journal_once(
    sqlite_engine: tuple[str, ProjectionEngine], dying: Dying
) -> None:
    """Worker processes of one ``work -p N`` start together, each counting the journal."""
    _, engine = sqlite_engine
    engine.max_attempts = 5
    for _ in range(2):
        assert _stuck_once(engine, dying).attempts is None
    errors: list[BaseException] = []

    def start() -> None:
        try:
            park_stuck(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert _attempts(engine) == 2
    assert not _journal(engine).exists()
    assert not _lock_file(engine).exists()


def test_a_start_that_counted_the_journal_leaves_no_lock_file(
    sqlite_engine: tuple[str, ProjectionEngine], dying: Dying
) -> None:
    """The empty ``<db>.stuck-attempts.lock`` stayed beside the database for ever."""
    _, engine = sqlite_engine
    assert _stuck_once(engine, dying).attempts is None
    assert park_stuck(engine) == 0
    assert _attempts(engine) == 1
    assert not _journal(engine).exists()
    assert not _lock_file(engine).exists()

    _lock_file(engine).touch()  # one an earlier version left: gone at the next start
    assert park_stuck(engine) == 0
    assert not _lock_file(engine).exists()
    assert _attempts(engine) == 1


def test_a_start_that_waited_on_a_removed_lock_file_takes_the_current_one(
    sqlite_engine: tuple[str, ProjectionEngine], dying: Dying
) -> None:
    """A start waits on the lock file; its holder removes it, and a third start makes and
    takes a new one before the waiter wakes: the waiter must wait for that one, not count
    the journal beside it (the lock is the file at the path, not a file removed)."""
    _, engine = sqlite_engine
    assert _stuck_once(engine, dying).attempts is None
    lock = _lock_file(engine)
    held = [os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)]
    fcntl.flock(held[0], fcntl.LOCK_EX)
    first = os.fstat(held[0]).st_ino
    waiter = threading.Thread(target=park_stuck, args=(engine,))
    waiter.start()
    try:
        assert wait_until(lambda: _waits_for_flock(first), 10)
        lock.unlink()  # the first holder is done
        held.append(os.open(lock, os.O_RDWR | os.O_CREAT, 0o600))
        fcntl.flock(held[1], fcntl.LOCK_EX)  # the third start's
        os.close(held.pop(0))  # the first holder lets go of the removed file
        assert wait_until(lambda: _waits_for_flock(os.fstat(held[0]).st_ino), 10)
        assert _journal(engine).exists() and _attempts(engine) == 0  # not counted meanwhile
    finally:
        for fd in held:
            os.close(fd)
        waiter.join(30)
    assert _attempts(engine) == 1
    assert not _journal(engine).exists()


def test_stores_on_a_server_keep_no_journal(pg_database: Callable[[], str]) -> None:
    store = SqlStore(pg_database())
    try:
        assert store.stuck_journal() is None
    finally:
        store.close()
