"""A replay whose lock is lost while it runs (PostgreSQL: the session holding the advisory
lock ended, by an idle-session or proxy timeout, a restart or a terminated backend; SQLite:
the lock file removed) stops before its next commit: another replay can take the lock then,
and two replays writing one shadow would swap in a half-built model."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from projections.replay import ReplayHooks, ReplayLocked, ReplayOptions, replay_lock
from tests.replay_helpers import Pipeline, deposits, query


class _LoseTheLock(ReplayHooks):
    """After the rebuild's first batch, its lock is lost and another replay takes it."""

    def __init__(self, p: Pipeline, lose: Callable[[], None]) -> None:
        self.p, self.lose = p, lose
        self.taken = threading.Event()
        self.release = threading.Event()
        self.other: list[str] = []
        self.thread: threading.Thread | None = None

    def progress(self, source: str, position: int, applied: int, total: int) -> None:
        if self.thread is not None:
            return
        self.lose()
        self.thread = threading.Thread(target=self._other_replay)
        self.thread.start()
        self.taken.wait(30)

    def _other_replay(self) -> None:
        store = self.p.runtime.engine.store_of("last_deposit")
        try:
            with replay_lock(store, "last_deposit"):
                self.other.append("took the lock")
                self.taken.set()
                self.release.wait(60)
        except ReplayLocked as exc:
            self.other.append(str(exc))
            self.taken.set()


def _terminate_lock_session(p: Pipeline) -> Callable[[], None]:
    def lose() -> None:
        with p.runtime.log.engine.begin() as conn:
            pids = conn.exec_driver_sql(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l "
                "JOIN pg_database d ON d.oid = l.database WHERE l.locktype = 'advisory' "
                "AND d.datname = current_database() AND l.pid <> pg_backend_pid()"
            ).all()
        assert pids == [(True,)], pids

    return lose


def _remove_lock_file(p: Pipeline) -> Callable[[], None]:
    database = sa.make_url(p.store_url).database
    return lambda: os.remove(f"{database}.replay-last_deposit.lock")


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_rebuild_that_lost_its_lock_stops_and_swaps_nothing(
    make_pipeline: Callable[[str], Pipeline], kind: str, tmp_path: Path
) -> None:
    p = make_pipeline(kind)
    p.feed("bank", deposits(400, 9, seed=21))
    p.execute("UPDATE last_deposit SET amount = -1")
    live = query(p, "SELECT account, amount, seq FROM last_deposit ORDER BY 1")
    lose = _terminate_lock_session(p) if kind == "postgresql" else _remove_lock_file(p)
    hooks = _LoseTheLock(p, lose)
    try:
        with pytest.raises(ReplayLocked, match="this replay lost its lock") as lost:
            p.replayer("last_deposit", hooks, batch=50).run(ReplayOptions())
    finally:
        hooks.release.set()
        if hooks.thread is not None:
            hooks.thread.join()

    assert hooks.other == ["took the lock"]  # the lock was free for another replay
    assert "another replay may hold it now" in str(lost.value)
    assert query(p, "SELECT account, amount, seq FROM last_deposit ORDER BY 1") == live
    p.replayer("last_deposit").run(ReplayOptions())  # the next replay is whole
    rebuilt = query(p, "SELECT count(*) FROM last_deposit WHERE amount = -1")
    assert rebuilt == [(0,)]


def test_an_in_place_replay_that_lost_its_lock_stops(pg: Pipeline) -> None:
    pg.feed("bank", deposits(400, 9, seed=22))
    hooks = _LoseTheLock(pg, _terminate_lock_session(pg))
    try:
        with pytest.raises(ReplayLocked, match="this replay lost its lock"):
            pg.replayer("last_deposit", hooks, batch=50).run(ReplayOptions(from_position=0))
    finally:
        hooks.release.set()
        if hooks.thread is not None:
            hooks.thread.join()
    assert hooks.other == ["took the lock"]
