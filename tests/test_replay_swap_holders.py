"""A replay's swap that waits for a lock on a live table an application's transaction holds
says, at each retry and when it gives up, which table it waited for and who holds it: the
operator can then end that session rather than guess."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

import outbox.db
from outbox.errors import StoreError
from projections import replay_rebuild
from projections.replay import Replayer, ReplayHooks, ReplayOptions
from tests.replay_helpers import EVENTS, Pipeline, query

_APPLICATION = "billing-report"


class _HoldLive(ReplayHooks):
    """Before the swap, an application's transaction reads the live table and stays open."""

    def __init__(self, holder: psycopg.Connection) -> None:
        self.holder = holder

    def before_swap(self) -> None:
        self.holder.execute("SELECT count(*) FROM last_deposit")


def test_a_blocked_swap_names_the_table_and_who_holds_it(
    pg: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg.feed("bank", EVENTS)
    live = query(pg, "SELECT account, amount FROM last_deposit ORDER BY 1")
    monkeypatch.setattr(replay_rebuild, "_SWAP_LOCK_TIMEOUT_MS", 300)
    monkeypatch.setattr(replay_rebuild, "_SWAP_ATTEMPTS", 2)
    dsn = sa.make_url(pg.store_url).set(drivername="postgresql")
    holder = psycopg.connect(
        dsn.render_as_string(hide_password=False), application_name=_APPLICATION
    )
    pid = holder.info.backend_pid
    try:
        with capture_logs() as logs, pytest.raises(StoreError) as failed:
            pg.replayer("last_deposit", hooks=_HoldLive(holder)).run(ReplayOptions())
    finally:
        holder.rollback()
        holder.close()

    retried = [e for e in logs if e["event"] == "replay swap retried"]
    assert len(retried) == 1, logs
    for said in (str(retried[0]), str(failed.value)):
        assert "waiting for a lock on last_deposit" in said, said
        assert f"held by pid {pid} (AccessShareLock, idle in transaction" in said, said
        assert f"application '{_APPLICATION}'" in said, said
        assert re.search(r"transaction open [0-9.]+ s\)", said), said
        assert pg.store_url not in said, said
    assert query(pg, "SELECT account, amount FROM last_deposit ORDER BY 1") == live


class _HoldCheckpoint(ReplayHooks):
    """Before the swap, a live worker's batch holds its lane's checkpoint row, and a report
    reads the live table (a lock the swap never got to wait for)."""

    def __init__(self, worker: psycopg.Connection, report: psycopg.Connection) -> None:
        self.worker, self.report = worker, report

    def before_swap(self) -> None:
        self.worker.execute(
            "SELECT position FROM rm_checkpoints WHERE projection = 'last_deposit' FOR UPDATE"
        )
        self.report.execute("SELECT count(*) FROM last_deposit")


def test_a_swap_blocked_on_a_checkpoint_row_names_its_holder_only(
    pg: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg.feed("bank", EVENTS)
    monkeypatch.setattr(replay_rebuild, "_SWAP_LOCK_TIMEOUT_MS", 400)
    monkeypatch.setattr(replay_rebuild, "_SWAP_ATTEMPTS", 2)
    dsn = sa.make_url(pg.store_url).set(drivername="postgresql").render_as_string(False)
    worker = psycopg.connect(dsn, application_name="worker")
    report = psycopg.connect(dsn, application_name=_APPLICATION)
    worker_pid, report_pid = worker.info.backend_pid, report.info.backend_pid
    try:
        with capture_logs() as logs, pytest.raises(StoreError) as failed:
            pg.replayer("last_deposit", hooks=_HoldCheckpoint(worker, report)).run(ReplayOptions())
    finally:
        for conn in (worker, report):
            conn.rollback()
            conn.close()

    retried = [e for e in logs if e["event"] == "replay swap retried"]
    assert len(retried) == 1, logs
    for said in (str(retried[0]), str(failed.value)):
        assert "waiting for a lock on a row of rm_checkpoints" in said, said
        assert f"held by pid {worker_pid} (" in said, said
        assert "application 'worker'" in said, said
        assert f"pid {report_pid} " not in said, said
        assert _APPLICATION not in said, said
    assert isinstance(failed.value.__cause__, psycopg.errors.LockNotAvailable)
    watching = query(  # LockWatch's connection, whose last query it was: closed
        pg,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND position('pg_blocking_pids' IN query) > 0 AND pid <> pg_backend_pid()",
    )
    assert watching == [(0,)], watching


_LANE = (
    "SELECT position FROM rm_checkpoints WHERE projection = 'last_deposit' "
    "ORDER BY source {0}, partition {0} LIMIT 1 FOR UPDATE"
)


class _Deadlock(ReplayHooks):
    """Before the swap, a worker holds the swap's last lane; once the swap waits for it
    (holding its first lane), the worker asks for that first one too: a deadlock, found by
    the swap's side (the worker's ``deadlock_timeout`` is longer)."""

    def __init__(self, worker: psycopg.Connection, dsn: str) -> None:
        self.worker, self.dsn = worker, dsn
        self.thread: threading.Thread | None = None

    def before_swap(self) -> None:
        if self.thread is not None:
            return
        self.worker.execute("SET deadlock_timeout = '10s'")
        self.worker.execute(_LANE.format("DESC"))
        self.thread = threading.Thread(target=self._second)
        self.thread.start()

    def _second(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as watch:
            for _ in range(100):
                waiting = watch.execute(_WAITING, (self.worker.info.backend_pid,)).fetchone()
                if waiting and waiting[0]:
                    break
                time.sleep(0.05)
        self.worker.execute(_LANE.format("ASC"))
        time.sleep(0.5)  # the swap's retry waits, then goes through
        self.worker.rollback()


_WAITING = (
    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE a.datname = current_database() AND NOT l.granted AND l.pid <> %s"
)


def test_a_swap_in_a_deadlock_says_so_without_a_lock_timeout_it_did_not_wait(
    pg: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg.feed("bank", EVENTS)
    monkeypatch.setattr(replay_rebuild, "_SWAP_LOCK_TIMEOUT_MS", 3000)
    dsn = sa.make_url(pg.store_url).set(drivername="postgresql").render_as_string(False)
    worker = psycopg.connect(dsn, application_name="worker")
    worker_pid = worker.info.backend_pid
    hooks = _Deadlock(worker, dsn)
    try:
        with capture_logs() as logs:
            pg.replayer("last_deposit", hooks=hooks).run(ReplayOptions())
    finally:
        if hooks.thread is not None:
            hooks.thread.join()
        worker.close()

    retried = [e for e in logs if e["event"] == "replay swap retried"]
    assert len(retried) == 1, logs
    said = retried[0]["blocked"]
    assert said.startswith("deadlock waiting for a lock on a row of rm_checkpoints"), said
    assert f"held by pid {worker_pid} (" in said, said


class _HoldAtSwap(ReplayHooks):
    """Just before the swap (a SQLite rebuild carries nothing made by hand, so the swap's
    transaction is the next to want the write lock), a live worker's connection holds
    SQLite's write lock, until :meth:`release`."""

    def __init__(self, path: str) -> None:
        self.holder = sqlite3.connect(path, isolation_level=None)

    def before_swap(self) -> None:
        self.holder.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        if self.holder.in_transaction:
            self.holder.rollback()


def _locked_out_at_swap(
    make_pipeline: Callable[[str], Pipeline], monkeypatch: pytest.MonkeyPatch
) -> tuple[Pipeline, Replayer, _HoldAtSwap]:
    monkeypatch.setattr(outbox.db, "SQLITE_BUSY_TIMEOUT", 0.2)  # read at connect time
    p = make_pipeline("sqlite")
    p.feed("bank", EVENTS)
    hold = _HoldAtSwap(sa.make_url(p.store_url).database or "")
    replayer = p.replayer("last_deposit", hooks=hold)
    return p, replayer, hold


def _one_swap_retry(logs: list[dict[str, Any]]) -> dict[str, Any]:
    """The swap's one retry, the only one the replay logged."""
    retried = [e for e in logs if e["event"].startswith("replay ") and "retried" in e["event"]]
    assert [(e["event"], e["projection"]) for e in retried] == [
        ("replay swap retried", "last_deposit")
    ], logs
    return retried[0]


def test_a_swap_locked_out_on_sqlite_retries_and_fails_naming_the_projection(
    make_pipeline: Callable[[str], Pipeline], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay_rebuild, "_SWAP_ATTEMPTS", 2)
    p, replayer, hold = _locked_out_at_swap(make_pipeline, monkeypatch)
    live = query(p, "SELECT account, amount FROM last_deposit ORDER BY 1")
    try:
        with capture_logs() as logs, pytest.raises(StoreError) as failed:
            replayer.run(ReplayOptions())
    finally:
        hold.release()
        hold.holder.close()

    retried = _one_swap_retry(logs)
    assert "blocked" not in retried, retried
    assert str(failed.value).startswith("last_deposit: replay failed:"), str(failed.value)
    assert "database is locked" in str(failed.value.__cause__), repr(failed.value.__cause__)
    assert query(p, "SELECT account, amount FROM last_deposit ORDER BY 1") == live


def test_a_swap_locked_out_on_sqlite_once_is_retried_and_the_replay_completes(
    make_pipeline: Callable[[str], Pipeline], monkeypatch: pytest.MonkeyPatch
) -> None:
    p, replayer, hold = _locked_out_at_swap(make_pipeline, monkeypatch)
    live = query(p, "SELECT account, amount FROM last_deposit ORDER BY 1")
    write = replayer._write

    @contextmanager
    def write_released_at_failure() -> Iterator[sa.Connection]:
        try:
            with write() as conn:
                yield conn
        except StoreError:  # the first failure: the worker commits and goes
            hold.release()
            raise

    monkeypatch.setattr(replayer, "_write", write_released_at_failure)
    try:
        with capture_logs() as logs:
            summary = replayer.run(ReplayOptions())
    finally:
        hold.release()
        hold.holder.close()

    retried = _one_swap_retry(logs)
    assert "database is locked" in retried["error"], retried
    assert summary.tables == ["last_deposit"]
    assert query(p, "SELECT account, amount FROM last_deposit ORDER BY 1") == live
    assert not any(t.endswith("__rebuild") for t in p.tables()), p.tables()
