"""The swap guard (projections/document_swap_guard.py) between replays: a replay taken over
leaves the new replay's swap record alone, a replay after one killed in its swap ends the
dead swap within seconds, and a killSessions the server refuses is warned about once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import AutoReconnect, OperationFailure, PyMongoError
from structlog.testing import capture_logs

from projections import document_swap_guard
from projections.document_generations import generation_of
from projections.document_replay import DocumentReplayer
from projections.replay_lock import REPLAY_LOCKS
from projections.replay_types import ReplayHooks, ReplayLocked, ReplayOptions
from projections.store import Lane
from tests.document_replay_helpers import Docs, deposits, docs, kill_in_swap, totals

__all__ = ["docs"]  # the fixture


def test_a_replay_taken_over_leaves_the_new_replays_swap_record_alone(
    docs: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replay A stalls past its lease before its swap; replay B (same process) takes the
    lease over and is inside its swap when A's swap starts: while A's attempts conflict
    with B's transaction, B's record in rm_swaps stays B's (a live worker watches B's
    swap, not A's), A stops without swapping and B swaps."""
    events = deposits(200, 6, seed=51)
    docs.feed(events)
    swaps = docs.store.database[document_swap_guard.SWAPS]
    b_in_swap = threading.Event()
    second: list[DocumentReplayer] = []
    seen: list[Any] = []
    settle = DocumentReplayer._settle_parked

    def watched_settle(self: DocumentReplayer, session: Any) -> int:
        if second and self is second[0] and not b_in_swap.is_set():
            b_in_swap.set()
            until = time.monotonic() + 2.5  # replay A's swap attempts meanwhile
            while time.monotonic() < until:
                seen.append((swaps.find_one({"_id": "doc_totals"}) or {}).get("lsid"))
                time.sleep(0.05)
        return settle(self, session)

    monkeypatch.setattr(DocumentReplayer, "_settle_parked", watched_settle)
    outcome: list[Any] = []

    def replay_b() -> None:
        try:
            outcome.append(second[0].run(ReplayOptions()))
        except BaseException as exc:  # reported below
            outcome.append(exc)

    b_thread = threading.Thread(target=replay_b, daemon=True)

    class TakenOver(ReplayHooks):
        def before_swap(self) -> None:
            docs.store.database[REPLAY_LOCKS].update_one(
                {"_id": "doc_totals"},
                {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}},
            )
            second.append(docs.replayer())
            b_thread.start()
            assert b_in_swap.wait(30)

    try:
        with pytest.raises(ReplayLocked, match="taken over"):
            docs.replayer(hooks=TakenOver()).run(ReplayOptions())
    finally:
        b_thread.join(timeout=60)
    assert seen and seen[0] is not None
    assert all(lsid == seen[0] for lsid in seen), "replay A overwrote replay B's swap record"
    assert len(outcome) == 1 and not isinstance(outcome[0], BaseException), outcome
    assert swaps.count_documents({}) == 0
    assert generation_of(docs.store.database, "doc_totals") == 1
    assert docs.totals() == totals(events)


def test_a_replay_after_one_killed_in_its_swap_ends_it_within_seconds(docs: Docs) -> None:
    """A replay killed in its swap leaves its transaction open (60 s on the server) holding
    its lease and the lanes' checkpoints; the next replay, once the lease expired, ends the
    dead swap's session and swaps within seconds."""
    first = deposits(300, 6, seed=52)
    docs.feed(first)
    kill_in_swap(docs, lease=1.0)
    time.sleep(1.5)  # the dead replay's lease expires
    started = time.monotonic()
    with capture_logs() as logs:
        docs.replayer().run(ReplayOptions())
    took = time.monotonic() - started
    assert took < 20, f"the replay waited {took:.0f} s for the killed swap"
    assert [e for e in logs if "died in its swap" in e["event"]], logs
    assert generation_of(docs.store.database, "doc_totals") == 1
    assert docs.totals() == totals(first)
    assert set(docs.checkpoints().values()) == {docs.head}
    assert docs.store.database[document_swap_guard.SWAPS].count_documents({}) == 0


def test_a_refused_kill_is_warned_about_once_per_dead_swap(
    docs: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server refuses killSessions (another user's session under access control): the
    batches stuck behind the dead swap try again every DEAD_AFTER seconds, and the process
    warns once for that swap, not once per batch and try."""
    monkeypatch.setattr(document_swap_guard, "CHECK_AFTER", 0.0)
    monkeypatch.setattr(document_swap_guard, "DEAD_AFTER", 0.1)
    command = Database.command

    def refusing(self: Database[Any], cmd: Any, *args: Any, **kwargs: Any) -> Any:
        if cmd == "killSessions":
            raise OperationFailure("not authorized to kill the session", code=13)
        return command(self, cmd, *args, **kwargs)

    monkeypatch.setattr(Database, "command", refusing)
    swaps = docs.store.database[document_swap_guard.SWAPS]
    with docs.store.client.start_session() as gone:
        swaps.insert_one(
            {"_id": "doc_totals", "lsid": gone.session_id, "holder": "gone:1", "beat": 3}
        )
    watches = [document_swap_guard.DeadSwapWatch(docs.store.database, "doc_totals")]
    with capture_logs() as logs:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            for watch in watches:
                watch.conflicted()
            if len(watches) < 3:
                watches.append(document_swap_guard.DeadSwapWatch(docs.store.database, "doc_totals"))
            time.sleep(0.02)
    refused = [e for e in logs if e["event"].startswith("cannot end the session")]
    assert len([e for e in refused if e["log_level"] == "warning"]) == 1, refused
    assert len(refused) > 3, refused  # tried again, told at debug level
    assert swaps.count_documents({}) == 1


def test_a_replay_after_an_older_releases_dead_swap_ends_it_within_seconds(docs: Docs) -> None:
    """The previous release recorded its swap without an owner (``{_id, lsid, holder,
    beat}``). Its replay, killed in its swap, left the transaction open holding the lease
    and the lanes' checkpoints; once that lease expired, the next replay ends the dead swap
    (its record can only be the expired lease's) and swaps within seconds."""
    events = deposits(200, 6, seed=53)
    docs.feed(events)
    database = docs.store.database
    locks = database[REPLAY_LOCKS]
    expired = datetime.now(UTC) - timedelta(seconds=1)
    locks.insert_one(
        {"_id": "doc_totals", "owner": "old-release", "holder": "gone:1", "expires_at": expired}
    )
    partitions = docs.projections["doc_totals"].partitions
    dead = docs.store.client.start_session()
    try:
        dead.start_transaction()
        database[document_swap_guard.SWAPS].update_one(  # as the previous release wrote it
            {"_id": "doc_totals"},
            {"$set": {"lsid": dead.session_id, "holder": "gone:1"}, "$inc": {"beat": 1}},
            upsert=True,
        )
        locks.update_one(
            {"_id": "doc_totals", "owner": "old-release"},
            {"$set": {"expires_at": datetime.now(UTC) + timedelta(seconds=30)}},
            session=dead,
        )
        for partition in range(partitions):
            docs.store.lock_lane(dead, Lane("doc_totals", "bank", partition))
        started = time.monotonic()
        with capture_logs() as logs:
            docs.replayer().run(ReplayOptions())
        took = time.monotonic() - started
    finally:
        try:
            dead.end_session()
        except PyMongoError:  # its session was killed
            pass
    assert took < 20, f"the replay waited {took:.0f} s for the older release's dead swap"
    assert [e for e in logs if "died in its swap" in e["event"]], logs
    assert generation_of(database, "doc_totals") == 1
    assert docs.totals() == totals(events)
    assert set(docs.checkpoints().values()) == {docs.head}
    assert database[document_swap_guard.SWAPS].count_documents({}) == 0


def test_the_dead_swaps_warned_of_are_forgotten_per_projection(
    docs: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each dead swap whose end the server refuses is warned about once, and the process
    keeps one of them per projection (the last), not one per dead swap for ever; once a
    swap is ended, its projection's entry goes."""
    monkeypatch.setattr(document_swap_guard, "CHECK_AFTER", 0.0)
    monkeypatch.setattr(document_swap_guard, "DEAD_AFTER", 0.05)
    monkeypatch.setattr(document_swap_guard, "_told", {})
    command = Database.command
    refuse = [True]

    def refusing(self: Database[Any], cmd: Any, *args: Any, **kwargs: Any) -> Any:
        if cmd == "killSessions" and refuse[0]:
            raise OperationFailure("not authorized to kill the session", code=13)
        return command(self, cmd, *args, **kwargs)

    monkeypatch.setattr(Database, "command", refusing)
    swaps = docs.store.database[document_swap_guard.SWAPS]
    sessions: list[Any] = []  # kept open: an ended session's id is used again

    def dead_swap(wanted: str) -> list[Any]:
        """Record a dead swap of a new session; watch it until ``wanted`` is logged."""
        sessions.append(docs.store.client.start_session())
        swaps.replace_one(
            {"_id": "doc_totals"},
            {"lsid": sessions[-1].session_id, "holder": "gone:1", "owner": "x", "beat": 1},
            upsert=True,
        )
        watch = document_swap_guard.DeadSwapWatch(docs.store.database, "doc_totals")
        with capture_logs() as logs:
            deadline = time.monotonic() + 10
            while not [e for e in logs if wanted in e["event"]]:
                assert time.monotonic() < deadline, logs
                watch.conflicted()
                time.sleep(0.01)
        return logs

    try:
        for _ in range(4):
            logs = dead_swap("cannot end the session")
            assert [e["log_level"] for e in logs if "cannot end" in e["event"]] == ["warning"]
        assert len(document_swap_guard._told) == 1
        refuse[0] = False
        dead_swap("died in its swap")
    finally:
        for session in sessions:
            try:
                session.end_session()
            except PyMongoError:  # killed
                pass
    assert document_swap_guard._told == {}
    assert swaps.count_documents({}) == 0


def test_an_older_releases_swap_is_left_alone_while_its_lease_lives_or_another_projections(
    docs: Docs,
) -> None:
    """A record without an owner is taken for the expired lease's only: while the older
    release's replay holds its lease, the next replay is refused and its swap's session
    lives on; a record of another projection is left alone by a takeover."""
    docs.feed(deposits(50, 5, seed=54))
    database = docs.store.database
    locks = database[REPLAY_LOCKS]
    swaps = database[document_swap_guard.SWAPS]
    ahead = datetime.now(UTC) + timedelta(seconds=30)
    locks.insert_one(
        {"_id": "doc_totals", "owner": "old", "holder": "alive:1", "expires_at": ahead}
    )
    database.create_collection("swapped")
    sessions = [docs.store.client.start_session() for _ in range(2)]
    try:
        for session, name in zip(sessions, ["doc_totals", "doc_last_deposit"], strict=True):
            session.start_transaction()
            swaps.update_one(  # as the previous release wrote it
                {"_id": name},
                {"$set": {"lsid": session.session_id, "holder": "alive:1"}, "$inc": {"beat": 1}},
                upsert=True,
            )
            database["swapped"].insert_one({"_id": name}, session=session)
        with capture_logs() as logs, pytest.raises(ReplayLocked, match="another replay"):
            docs.replayer().run(ReplayOptions())
        locks.update_one({}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}})
        sessions[0].abort_transaction()  # the older release's replay of doc_totals ended
        docs.replayer().run(ReplayOptions())  # takes the expired lease over
        sessions[1].commit_transaction()  # doc_last_deposit's swap was not ended
    finally:
        for session in sessions:
            session.end_session()
    assert not [e for e in logs if "died in its swap" in e["event"]], logs
    assert [d["_id"] for d in database["swapped"].find()] == ["doc_last_deposit"]
    assert [d["_id"] for d in swaps.find()] == ["doc_last_deposit"]


def test_two_projections_dead_swaps_and_a_flaky_read_are_each_warned_of_once(
    docs: Docs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """killSessions is refused; the dead swaps of two projections are watched alternately,
    and reading doc_totals' record fails now and then: each projection's refusal is warned
    of once (the memory is per projection), and so is the failed read, not once more at
    each turn between it and the refusal."""
    monkeypatch.setattr(document_swap_guard, "CHECK_AFTER", 0.0)
    monkeypatch.setattr(document_swap_guard, "DEAD_AFTER", 0.05)
    monkeypatch.setattr(document_swap_guard, "_told", {})
    command = Database.command
    find_one = Collection.find_one
    reads = [0]

    def refusing(self: Database[Any], cmd: Any, *args: Any, **kwargs: Any) -> Any:
        if cmd == "killSessions":
            raise OperationFailure("not authorized to kill the session", code=13)
        return command(self, cmd, *args, **kwargs)

    def flaky(self: Collection[Any], *args: Any, **kwargs: Any) -> Any:
        if self.name == document_swap_guard.SWAPS and args[:1] == ({"_id": "doc_totals"},):
            reads[0] += 1
            if reads[0] % 10 == 0:
                raise AutoReconnect("connection reset by peer")
        return find_one(self, *args, **kwargs)

    monkeypatch.setattr(Database, "command", refusing)
    monkeypatch.setattr(Collection, "find_one", flaky)
    swaps = docs.store.database[document_swap_guard.SWAPS]
    names = ["doc_totals", "doc_last_deposit"]
    with docs.store.client.start_session() as one, docs.store.client.start_session() as two:
        for name, gone in zip(names, [one, two], strict=True):
            swaps.insert_one({"_id": name, "lsid": gone.session_id, "holder": "gone:1", "beat": 3})
    watches = [document_swap_guard.DeadSwapWatch(docs.store.database, name) for name in names]
    with capture_logs() as logs:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            for watch in watches:
                watch.conflicted()
            time.sleep(0.01)
    warned = [
        e["projection"]
        for e in logs
        if e["event"].startswith("cannot end the session") and e["log_level"] == "warning"
    ]
    assert reads[0] > 40, reads  # the read failed several times, between refusals
    assert sorted(warned) == ["doc_last_deposit", "doc_totals", "doc_totals"], warned
